"""Secret values are wrapped once, where they enter, and unwrapped only where they leave for the agent."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "****"


class Secret:
    """A value whose str() and repr() are masked; `reveal()` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in a text that comes from elsewhere (e.g. a container's own log lines)."""
    for value in secrets:
        if value:
            text = text.replace(value, MASK)
    return text


def reveal(value: str | Secret) -> str:
    """The plain value of a variable, secret or not."""
    return value.reveal() if isinstance(value, Secret) else value
