"""The deploy job's locks against what they lock: `python3 tools/deploylock.py` (make lint, CI) exits 1 on a problem.

requirements/deploy.txt must pin, with hashes, exactly the closure of setup.cfg's `install_requires` (the CLI's
dependencies) and no package that only the `agent` extra brings; requirements/build.txt must pin, with hashes,
pyproject.toml's `[build-system] requires` (it builds deployplan from the checkout without build isolation).
The closure is followed through the `# via` lines the lock's generator writes: a pin whose chain does not lead
back to setup.cfg is more than the CLI needs. Requirements are parsed with `packaging`.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
DEPLOY_LOCK = "requirements/deploy.txt"
BUILD_LOCK = "requirements/build.txt"
BUILD_INPUT = "requirements/build.in"
OPTIONS = "--universal --python-version 3.11 --generate-hashes"
DEPLOY_COMMAND = f"uv pip compile setup.cfg {OPTIONS} --output-file {DEPLOY_LOCK}"
BUILD_COMMAND = f"uv pip compile {BUILD_INPUT} {OPTIONS} --output-file {BUILD_LOCK}"
# The agent's dependencies and what they bring along (docker: requests, urllib3...; Flask: Werkzeug, click...;
# PyJWT[crypto]: cryptography, cffi). The agent extra's own names and the installed closure are added to these.
AGENT_ONLY = frozenset(
    canonicalize_name(name)
    for name in [
        "docker",
        "requests",
        "urllib3",
        "certifi",
        "idna",
        "charset-normalizer",
        "pywin32",
        "paramiko",
        "flask",
        "werkzeug",
        "itsdangerous",
        "click",
        "blinker",
        "gunicorn",
        "packaging",
        "pyjwt",
        "cryptography",
        "cffi",
        "pycparser",
        "prometheus-client",
    ]
)
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>.+))?$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Pin:
    """One pinned package of a lock: its line, version, hashes and what it is there for (`# via`)."""

    name: str
    version: str
    line: int
    hashes: tuple[str, ...]
    via: tuple[str, ...]


@dataclass(frozen=True)
class Lock:
    """A parsed lock: its header comment, its pins, and the lines that are neither."""

    header: str
    pins: tuple[Pin, ...]
    problems: tuple[str, ...]


def _logical_lines(text: str) -> Iterable[tuple[int, str, list[str]]]:
    """Each requirement line (continuations joined) with its line number and the comment lines under it."""
    current: tuple[int, list[str], list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or (stripped.startswith("#") and current is None):
            continue
        if stripped.startswith("#"):
            assert current is not None
            current[2].append(stripped.lstrip("#").strip())
        elif raw[0].isspace() and current is not None and not current[2]:
            current[1].append(stripped.rstrip("\\").strip())
        else:
            if current is not None:
                yield current[0], " ".join(current[1]), current[2]
            current = (number, [stripped.rstrip("\\").strip()], [])
    if current is not None:
        yield current[0], " ".join(current[1]), current[2]


def parse_lock(text: str) -> Lock:
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    pins, problems = [], []
    for number, line, comments in _logical_lines(text):
        spec, *options = line.split(" --")
        match = PIN.match(spec.strip())
        hashes = tuple(f"--{o.strip()}" for o in options)
        if match is None:
            problems.append(f"line {number}: {spec.strip()!r} is not a pin (name==version)")
            continue
        bad = [h for h in hashes if not HASH.match(h)]
        if bad:
            problems.append(f"line {number}: {match['name']}: not a sha256 hash: {bad[0]}")
        via = [c.removeprefix("via").strip() for c in comments if c != "via"]
        pins.append(Pin(canonicalize_name(match["name"]), match["version"], number, hashes, tuple(v for v in via if v)))
    return Lock(header, tuple(pins), tuple(problems))


def closure(
    requirements: Iterable[Requirement], requires: Callable[[str], list[str] | None] = importlib.metadata.requires
) -> set[str]:
    """What these requirements install, as far as the installed metadata tells: this Python's, or that of another
    environment through `requires` (a distribution's name -> its requirement strings; PackageNotFoundError or
    None when it is not there)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            found = requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for child in map(Requirement, found):
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((child.name, frozenset(child.extras)))
    return {name for name, _ in seen}


def agent_only(cli: list[Requirement], agent: list[Requirement]) -> frozenset[str]:
    """The packages only the agent needs: the extra's own names, and the known list and the extra's closure
    (where installed here) less the closure of the CLI's requirements."""
    return frozenset({canonicalize_name(r.name) for r in agent} | ((AGENT_ONLY | closure(agent)) - closure(cli)))


def check_lock(lock: Lock, *, path: str, command: str, required: list[Requirement], root: str,
               forbidden: frozenset[str]) -> list[str]:  # fmt: skip
    """Every problem of one lock against the requirements it locks; an empty list when it satisfies them."""
    problems = [f"{path}: {p}" for p in lock.problems]
    if f"#    {command}\n" not in lock.header + "\n":
        problems.append(f"{path}: the header does not name the command that makes it: {command}")
    pins = {pin.name: pin for pin in lock.pins}
    for pin in lock.pins:
        where = f"{path}:{pin.line}: {pin.name}=={pin.version}"
        if not pin.hashes:
            problems.append(f"{where}: no --hash (pip install --require-hashes refuses it); regenerate: {command}")
        if pin.name in forbidden:
            problems.append(f"{where}: only the agent needs it; the deploy job installs the CLI alone")
    for requirement in required:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{path}: {requirement} is not pinned; regenerate: {command}")
        elif not requirement.specifier.contains(pins[name].version, prereleases=True):
            problems.append(f"{path}:{pins[name].line}: {name}=={pins[name].version} is outside {requirement}")
    direct = {canonicalize_name(r.name) for r in required}
    for pin in lock.pins:
        if root in pin.via and pin.name not in direct:
            problems.append(f"{path}:{pin.line}: {pin.name} says it is there for {root}, which does not require it")
    reachable, grew = {root}, True
    while grew:
        before = len(reachable)
        reachable |= {pin.name for pin in lock.pins if set(pin.via) & reachable}
        grew = len(reachable) > before
    for pin in lock.pins:
        if pin.name not in reachable:
            problems.append(f"{path}:{pin.line}: {pin.name} is not needed by {root} (via {', '.join(pin.via) or '-'})")
    return problems


def declared(setup_cfg: str) -> tuple[list[Requirement], list[Requirement]]:
    """setup.cfg's install_requires (the CLI) and its `agent` extra."""
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(setup_cfg)

    def parse(value: str) -> list[Requirement]:
        return [Requirement(line) for line in value.splitlines() if line.strip() and not line.startswith("#")]

    return parse(config["options"]["install_requires"]), parse(config["options.extras_require"]["agent"])


def build_requires(pyproject: str) -> list[Requirement]:
    return [Requirement(text) for text in tomllib.loads(pyproject)["build-system"]["requires"]]


def check_repository(repo: Path = REPO) -> list[str]:
    """Both locks of this checkout against setup.cfg and pyproject.toml."""
    try:
        cli, agent = declared((repo / "setup.cfg").read_text("utf-8"))
        build = build_requires((repo / "pyproject.toml").read_text("utf-8"))
        build_in = [Requirement(line) for line in (repo / BUILD_INPUT).read_text("utf-8").splitlines()
                    if line.strip() and not line.startswith("#")]  # fmt: skip
        deploy_lock = parse_lock((repo / DEPLOY_LOCK).read_text("utf-8"))
        build_lock = parse_lock((repo / BUILD_LOCK).read_text("utf-8"))
    except (OSError, KeyError, InvalidRequirement, tomllib.TOMLDecodeError) as e:
        return [f"cannot read the locks or what they lock: {e}"]
    forbidden = agent_only(cli, agent)
    problems = check_lock(
        deploy_lock, path=DEPLOY_LOCK, command=DEPLOY_COMMAND, required=cli, root="deployplan (setup.cfg)",
        forbidden=forbidden,
    )  # fmt: skip
    if sorted(map(str, build_in)) != sorted(map(str, build)):
        problems.append(f"{BUILD_INPUT}: {', '.join(map(str, build_in))} is not pyproject.toml's build-system "
                        f"requires ({', '.join(map(str, build))})")  # fmt: skip
    problems += check_lock(
        build_lock, path=BUILD_LOCK, command=BUILD_COMMAND, required=build, root=f"-r {BUILD_INPUT}",
        forbidden=forbidden,
    )  # fmt: skip
    return problems


def main() -> int:
    problems = check_repository()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
