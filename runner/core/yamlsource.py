"""YAML parsing that keeps where every node is, refuses duplicate keys, aliases and oversized input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.core.errors import InvalidInput
from runner.core.problems import Problem, field_path

MAX_BYTES = 64 * 1024
MAX_NODES = 2000
# Plans nest 3 levels and workflows about 8; deeper input only exhausts the recursive composer.
MAX_DEPTH = 32
# A key is its text when YAML would read it as one of these (`on:` of a workflow is the boolean True in YAML 1.1).
_PLAIN_KEY_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "bool", "int", "float", "null", "timestamp"))

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """Parsed YAML data plus the (line, col) of every value and of every mapping key, by path."""

    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The place of a path, falling back to its nearest ancestor that has one."""
        if key and path in self.keys:
            return self.keys[path]
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (plans never need them; they are how alias bombs work) and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                None, None, "aliases (*name) are not allowed in plans; write the value out", event.start_mark
            )
        if self.depth >= MAX_DEPTH and parent is not None:
            raise yaml.MarkedYAMLError(None, None, f"nested more than {MAX_DEPTH} levels deep", parent.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(raw: bytes, *, filename: str) -> Located:
    """Parse one YAML document into plain data with positions; raises InvalidInput naming the place."""
    text = _decode(raw, filename=filename)
    try:
        loader = _NoAliasLoader(text)  # checks every character up front
    except yaml.reader.ReaderError as e:
        message = f"control character U+{e.character:04X}: YAML text may contain only printable characters"
        raise InvalidInput([Problem(filename, *_place(text[: e.position]), "", message)]) from e
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InvalidInput([Problem(filename, line, col, "", _yaml_message(e))]) from e
    except yaml.YAMLError as e:
        raise InvalidInput([Problem(filename, 1, 1, "", f"not valid YAML: {e}")]) from e
    finally:
        loader.dispose()
    if node is None:
        raise InvalidInput([Problem(filename, 1, 1, "", "the file is empty; a plan is a YAML mapping")])
    located = Located(data=None)
    counter = [0]
    problems: list[Problem] = []
    located.data = _convert(node, (), located, loader, problems, counter, filename)
    if problems:
        raise InvalidInput(problems)
    return located


def _decode(raw: bytes, *, filename: str) -> str:
    if len(raw) > MAX_BYTES:
        raise InvalidInput(
            [Problem(filename, 1, 1, "", f"file is {len(raw)} bytes; a plan may have at most {MAX_BYTES}")]
        )
    if b"\x00" in raw:
        where = _place(raw[: raw.index(b"\x00")].decode("utf-8", "replace"))
        message = "binary file (it contains NUL bytes); a plan is UTF-8 YAML text"
        raise InvalidInput([Problem(filename, *where, "", message)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = _place(raw[: e.start].decode("utf-8"))
        raise InvalidInput([Problem(filename, *where, "", f"not UTF-8 text (invalid byte {raw[e.start]:#04x})")]) from e


def _place(before: str) -> tuple[int, int]:
    """The 1-based line and column of the character that follows `before`."""
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    problem = e.problem or "invalid YAML"
    if "'\\t'" in problem:
        return "tab character: YAML indentation must use spaces"
    if problem.startswith(("aliases", "nested")):
        return problem
    context = f" {e.context}" if e.context else ""
    return f"not valid YAML: {problem}{context}".rstrip()


def _convert(
    node: Node,
    path: Path_,
    located: Located,
    loader: yaml.SafeLoader,
    problems: list[Problem],
    counter: list[int],
    filename: str,
) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise InvalidInput([Problem(filename, node.start_mark.line + 1, 1, "", f"more than {MAX_NODES} YAML nodes")])
    located.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _PLAIN_KEY_TAGS:
                problems.append(Problem(filename, line, col, field_path(path), "mapping keys must be plain strings"))
                continue
            key = key_node.value
            if key in out:
                first = located.keys[(*path, key)]
                problems.append(
                    Problem(
                        filename,
                        line,
                        col,
                        field_path((*path, key)),
                        f"duplicate key (first defined at line {first[0]})",
                    )
                )
                continue
            located.keys[(*path, key)] = (line, col)
            out[key] = _convert(value_node, (*path, key), located, loader, problems, counter, filename)
        return out
    if isinstance(node, SequenceNode):
        return [
            _convert(item, (*path, i), located, loader, problems, counter, filename)
            for i, item in enumerate(node.value)
        ]
    try:
        return loader.construct_object(node)
    except yaml.MarkedYAMLError as e:
        message = f"cannot read this value: {e.problem}"
    except (ValueError, OverflowError) as e:  # an implicit or explicit tag whose text does not parse (2001-13-45)
        message = f"cannot read {node.value!r} as !!{node.tag.rpartition('2002:')[2]}: {e}"
    problems.append(Problem(filename, *located.values[path], field_path(path), message))
    return None
