"""YAML parsing that keeps where every node is, refuses duplicate keys, aliases and oversized input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.errors import InvalidInput
from runner.problems import Problem, field_path

MAX_BYTES = 64 * 1024
MAX_NODES = 2000

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
    """SafeLoader that refuses anchors' aliases: plans never need them, and they are how alias bombs work."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                None, None, "aliases (*name) are not allowed in plans; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)  # type: ignore[no-untyped-call, no-any-return]


def load_yaml(raw: bytes, *, filename: str) -> Located:
    """Parse one YAML document into plain data with positions; raises InvalidInput naming the place."""
    text = _decode(raw, filename=filename)
    loader = _NoAliasLoader(text)
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
        raise InvalidInput([Problem(filename, 0, 0, "", f"file is {len(raw)} bytes; a plan may have at most {MAX_BYTES}")])
    if b"\x00" in raw:
        raise InvalidInput([Problem(filename, 0, 0, "", "binary file (it contains NUL bytes); a plan is UTF-8 YAML text")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput([Problem(filename, 0, 0, "", f"not UTF-8 text (invalid byte at offset {e.start})")]) from e


def _yaml_message(e: yaml.MarkedYAMLError) -> str:
    problem = e.problem or "invalid YAML"
    if "'\\t'" in problem:
        return "tab character: YAML indentation must use spaces"
    if problem.startswith("aliases"):
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
            if not isinstance(key_node, ScalarNode) or not isinstance(loader.construct_object(key_node), str):
                problems.append(Problem(filename, line, col, field_path(path), "mapping keys must be plain strings"))
                continue
            key = key_node.value
            if key in out:
                first = located.keys[(*path, key)]
                problems.append(
                    Problem(filename, line, col, field_path((*path, key)), f"duplicate key (first defined at line {first[0]})")
                )
                continue
            located.keys[(*path, key)] = (line, col)
            out[key] = _convert(value_node, (*path, key), located, loader, problems, counter, filename)
        return out
    if isinstance(node, SequenceNode):
        return [
            _convert(item, (*path, i), located, loader, problems, counter, filename) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node)  # type: ignore[no-untyped-call]
