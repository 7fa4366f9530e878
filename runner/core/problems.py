"""A validation problem with its place, and the one reporter that formats them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One finding: the file, its line and column (1-based, 0 when unknown), the field and the message."""

    file: str
    line: int
    col: int
    field: str
    message: str

    def format(self) -> str:
        """`path:line:col: field: message`, the format of every linter."""
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def json_path(self) -> str:
        """The field as a JSON path (`$.steps[1].action`), as the agent API reports it."""
        if not self.field:
            return "$"
        return "$" + ("" if self.field.startswith("[") else ".") + self.field

    def github_annotation(self) -> str:
        """A `::error` workflow command that GitHub shows on the file's line."""
        message = f"{self.field}: {self.message}" if self.field else self.message
        props = f"file={_escape_property(self.file)}"
        if self.line:
            props += f",line={self.line},col={self.col}"
        return f"::error {props}::{_escape_data(message)}"


def field_path(parts: tuple[str | int, ...]) -> str:
    """('steps', 1, 'action') -> 'steps[1].action'."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
