"""Bad plans and bad inputs through the installed CLI: exit 2 (lint: 1), `file:line:col: field: message`, no traceback.

Template comments (`{# ... #}`) are refused like every other construct besides the three variables: the contract
allows exactly `{{ env }}`, `{{ tag }}` and `{{ repository }}`, and a YAML comment says the same thing plainly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import InProcessCli as Cli

# plans/runtime.yaml as the contract shows it; the line numbers below are this text's.
PLAN = """\
version: 1
plan: runtime
environment: "{{ env }}"
image: "ghcr.io/{{ repository }}/runtime:{{ tag }}"
steps:
  - name: Pull the runtime image
    action: pull
    timeout: 600
  - name: Stop and remove the current runtime
    action: stop_remove
    stop_timeout: 30
  - name: Start the new runtime
    action: start
  - name: Verify the runtime stays up
    action: verify
    timeout: 60
    stable_for: 5
"""
START = "  - name: Start the new runtime\n    action: start\n"
VERIFY = "  - name: Verify the runtime stays up\n    action: verify\n    timeout: 60\n    stable_for: 5\n"
RENDER = ("render", "plans/x.yaml", "--env", "dev", "--tag", "1.0.0", "--repository", "acme/trader")
X = "plans/x.yaml"
ONLY = "only {{ env }}, {{ tag }}, {{ repository }} may appear"
TOP_KEYS = "allowed here: environment, image, plan, steps, version"
CONTROL = "control and format characters (newline, tab, bidi overrides, ...) are not allowed"
IMAGE_RULE = "is not valid: <registry>/<path>/runtime:<tag>, all lowercase"
BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def edit(old: str, new: str) -> str:
    """PLAN with one exact piece replaced."""
    assert PLAN.count(old) == 1, old
    return PLAN.replace(old, new)


def name(value: str) -> str:
    """PLAN with the start step's name (line 12, value at column 11) replaced by raw YAML."""
    return edit("Start the new runtime", value)


CASES = [
    # -- not YAML, or not a mapping
    pytest.param(
        "version: 1\nplan: [runtime\n", [f"{X}:3:1: not valid YAML: expected ',' or ']'"], id="malformed-flow"
    ),
    pytest.param(
        edit("    action: pull", "   action: pull"),
        [f"{X}:7:4: not valid YAML: expected <block end>, but found '<block mapping start>'"],
        id="malformed-indent",
    ),
    pytest.param(
        edit("    action: pull", "\taction: pull"),
        [f"{X}:7:1: tab character: YAML indentation must use spaces"],
        id="tab",
    ),
    pytest.param(PLAN + "plan: other\n", [f"{X}:18:1: plan: duplicate key (first defined at line 2)"], id="dup-top"),
    pytest.param(
        edit("    timeout: 600\n", "    timeout: 600\n    timeout: 700\n"),
        [f"{X}:9:5: steps[0].timeout: duplicate key (first defined at line 8)"],
        id="dup-in-step",
    ),
    pytest.param("", [f"{X}:1:1: the file is empty; a plan is a YAML mapping"], id="empty"),
    pytest.param(" \n\n   \n", [f"{X}:1:1: the file is empty"], id="whitespace-only"),
    pytest.param("# nothing here\n", [f"{X}:1:1: the file is empty"], id="comment-only"),
    pytest.param("- version: 1\n- plan: runtime\n", [f"{X}:1:1: expected a mapping, found list"], id="list"),
    pytest.param("runtime\n", [f"{X}:1:1: expected a mapping, found string 'runtime'"], id="scalar"),
    pytest.param(
        PLAN + "---\nversion: 1\n", [f"{X}:18:1: not valid YAML: but found another document"], id="two-documents"
    ),
    # -- the four steps
    pytest.param(
        edit(VERIFY, ""), [f"{X}:6:3: steps: found 3 items; exactly four steps, in this order"], id="three-steps"
    ),
    pytest.param(PLAN + VERIFY, [f"{X}:6:3: steps: found 5 items; exactly four steps"], id="five-steps"),
    pytest.param(
        edit(START + VERIFY, VERIFY + START),
        [
            f"{X}:13:13: steps[2].action: step 3 must be 'start' (the steps are pull, stop_remove, start, verify, "
            "in this order); found 'verify'",
            f"{X}:17:13: steps[3].action: step 4 must be 'verify'",
        ],
        id="out-of-order",
    ),
    pytest.param(
        edit("action: stop_remove", "action: restart"),
        [f"{X}:10:13: steps[1].action: step 2 must be 'stop_remove' (the steps are pull, stop_remove, start, verify"],
        id="unknown-action",
    ),
    pytest.param(
        edit("steps:\n", "steps: {}\n").split("  - name: Pull")[0], [f"{X}:5:8: steps: expected a list"], id="steps-map"
    ),
    # -- unknown keys, at the top and in the steps
    *[
        pytest.param(PLAN + f"{key}: x\n", [f"{X}:18:1: {key}: unknown key '{key}'; {TOP_KEYS}"], id=f"top-{key}")
        for key in ("privileged", "volumes", "env", "command", "hosts")
    ],
    *[
        pytest.param(
            edit(f"    action: {action}\n", f"    action: {action}\n    {key}: x\n"),
            [f"{X}:{line}:5: steps[{index}].{key}: unknown key '{key}'; allowed here: {allowed}"],
            id=f"step-{key}",
        )
        for key, action, index, line, allowed in (
            ("privileged", "start", 2, 14, "action, name"),
            ("volumes", "start", 2, 14, "action, name"),
            ("env", "start", 2, 14, "action, name"),
            ("command", "pull", 0, 8, "action, name, timeout"),
            ("hosts", "verify", 3, 16, "action, name, stable_for, timeout"),
        )
    ],
    pytest.param(PLAN + "on: x\n", [f"{X}:18:1: on: unknown key 'on'"], id="yaml11-bool-key"),
    # -- types
    pytest.param(
        edit("timeout: 600", 'timeout: "600"'),
        [f"{X}:8:14: steps[0].timeout: expected an integer, found string '600'"],
        id="string-timeout",
    ),
    pytest.param(
        edit("timeout: 600", "timeout: true"),
        [f"{X}:8:14: steps[0].timeout: expected an integer, found boolean True"],
        id="bool-timeout",
    ),
    pytest.param(
        edit("timeout: 600", "timeout: 1.5"),
        [f"{X}:8:14: steps[0].timeout: expected an integer, found number 1.5"],
        id="float-timeout",
    ),
    pytest.param(
        edit("timeout: 600", "timeout: 600.0"),
        [f"{X}:8:14: steps[0].timeout: expected an integer, found number 600.0; write it without a decimal point"],
        id="integral-float-timeout",
    ),
    pytest.param(edit(START, "  - null\n"), [f"{X}:12:5: steps[2]: expected a mapping, found null"], id="null-step"),
    pytest.param(
        edit("timeout: 600", "timeout: 2001-13-45"),
        [f"{X}:8:14: steps[0].timeout: cannot read '2001-13-45' as !!timestamp: month must be in 1..12"],
        id="bad-timestamp",
    ),
    pytest.param(
        name("!!python/name:os.system x"),
        [f"{X}:12:11: steps[2].name: cannot read this value: could not determine a constructor for the tag"],
        id="python-tag",
    ),
    # -- numbers out of range
    pytest.param(
        edit("timeout: 600", "timeout: 0"),
        [f"{X}:8:14: steps[0].timeout: 0 is out of range: seconds the pull may take (1-3600)"],
        id="pull-timeout-0",
    ),
    pytest.param(
        edit("timeout: 600", "timeout: 3601"),
        [f"{X}:8:14: steps[0].timeout: 3601 is out of range: seconds the pull may take (1-3600)"],
        id="pull-timeout-3601",
    ),
    pytest.param(
        edit("stop_timeout: 30", "stop_timeout: -1"),
        [f"{X}:11:19: steps[1].stop_timeout: -1 is out of range: seconds of grace between SIGTERM and SIGKILL (0-300)"],
        id="stop-timeout--1",
    ),
    pytest.param(
        edit("stop_timeout: 30", "stop_timeout: 301"),
        [f"{X}:11:19: steps[1].stop_timeout: 301 is out of range"],
        id="stop-timeout-301",
    ),
    pytest.param(
        edit("timeout: 60\n", "timeout: 0\n"),
        [
            f"{X}:16:14: steps[3].timeout: 0 is out of range: seconds verify may take in all (1-600)",
            f"{X}:17:17: steps[3].stable_for: 5 is above the step's timeout (0); it must fit in it",
        ],
        id="verify-timeout-0",
    ),
    pytest.param(
        edit("timeout: 60\n", "timeout: 601\n"),
        [f"{X}:16:14: steps[3].timeout: 601 is out of range"],
        id="verify-timeout-601",
    ),
    pytest.param(
        edit("stable_for: 5", "stable_for: 301"),
        [
            f"{X}:17:17: steps[3].stable_for: 301 is out of range: seconds the container must stay running",
            f"{X}:17:17: steps[3].stable_for: 301 is above the step's timeout (60)",
        ],
        id="stable-for-301",
    ),
    pytest.param(
        edit("stable_for: 5", "stable_for: 61"),
        [f"{X}:17:17: steps[3].stable_for: 61 is above the step's timeout (60); it must fit in it"],
        id="stable-for-above-timeout",
    ),
    # -- missing options: there are no defaults
    pytest.param(
        edit("    stop_timeout: 30\n", ""),
        [f"{X}:9:5: steps[1]: missing required key 'stop_timeout'"],
        id="missing-option",
    ),
    pytest.param(
        edit("    timeout: 60\n    stable_for: 5\n", ""),
        [f"{X}:14:5: steps[3]: missing required keys 'timeout', 'stable_for'"],
        id="missing-options",
    ),
    pytest.param(edit("version: 1\n", ""), [f"{X}:1:1: missing required key 'version'"], id="missing-version"),
    # -- the image
    *[
        pytest.param(
            edit("runtime:{{ tag }}", f"runtime:{tag}"),
            [f"{X}:4:8: image: 'ghcr.io/acme/trader/runtime:{tag}' {IMAGE_RULE}"],
            id=f"image-{label}",
        )
        for label, tag in (("latest", "latest"), ("short-sha", "abc1234"), ("v-prefix", "v1.0.0"))
    ],
    pytest.param(
        edit("ghcr.io", "GHCR.io"),
        [f"{X}:4:8: image: 'GHCR.io/acme/trader/runtime:1.0.0' {IMAGE_RULE}"],
        id="image-uppercase",
    ),
    pytest.param(
        edit(":{{ tag }}", "@sha256:" + "a" * 64),
        [f"{X}:4:8: image: 'ghcr.io/acme/trader/runtime@sha256:{'a' * 64}' {IMAGE_RULE}"],
        id="image-digest",
    ),
    pytest.param(
        edit("/runtime:", "/trader-api:"),
        [f"{X}:4:8: image: 'ghcr.io/acme/trader/trader-api:1.0.0' {IMAGE_RULE}"],
        id="image-foreign-name",
    ),
    pytest.param(
        edit("runtime:{{ tag }}", "runtime:1.0.1"),
        [f"{X}:4:8: image: image tag is '1.0.1' but the requested tag is '1.0.0'"],
        id="image-other-tag",
    ),
    # -- the other top-level values
    pytest.param(edit("version: 1", "version: 2"), [f"{X}:1:10: version: expected 1, found 2"], id="version-2"),
    pytest.param(
        edit('"{{ env }}"', "prod"),
        [f"{X}:3:14: environment: renders to 'prod' but the requested environment is 'dev'"],
        id="environment-literal",
    ),
    pytest.param(
        edit('"{{ env }}"', "staging"),
        [f"{X}:3:14: environment: 'staging' is not one of 'dev', 'prod'"],
        id="environment-unknown",
    ),
    pytest.param(
        edit("plan: runtime", "plan: Runtime"),
        [f"{X}:2:7: plan: 'Runtime' is not valid: the plan's name"],
        id="plan-name",
    ),
    # -- step names
    pytest.param(
        name("x" * 81),
        [f"{X}:12:11: steps[2].name: '{'x' * 81}' has 81 characters: what the step does, in words (1-80 characters)"],
        id="name-81",
    ),
    pytest.param(name('""'), [f"{X}:12:11: steps[2].name: '' has 0 characters"], id="name-empty"),
    pytest.param(name(""), [f"{X}:12:10: steps[2].name: expected a string, found null"], id="name-null"),
    pytest.param(
        name('"Start\\a it"'),
        [f"{X}:12:11: steps[2].name: {CONTROL}"],
        id="name-control-escaped",
    ),
    pytest.param(
        name("Start\x07 it"),
        [f"{X}:12:16: control character U+0007: YAML text may contain only printable characters"],
        id="name-control-raw",
    ),
    pytest.param(
        name('"Start \\u202e it"'),
        [f"{X}:12:11: steps[2].name: {CONTROL}"],
        id="name-bidi-override",
    ),
    # -- templates: exactly {{ env }}, {{ tag }} and {{ repository }}
    *[
        pytest.param(name(f'"{template}"'), [f"{X}:12:11: steps[2].name: {message}"], id=f"template-{label}")
        for label, template, message in (
            ("cycler", "{{ cycler.__init__ }}", f"template expression (getattr) is not allowed; {ONLY}"),
            ("class", "{{ ''.__class__ }}", f"template expression (getattr) is not allowed; {ONLY}"),
            ("include", "{% include 'x' %}", f"template statements (include) are not allowed; {ONLY}"),
            ("lipsum", "{{ lipsum }}", f"unknown variable 'lipsum'; {ONLY}"),
            ("attr", "{{ tag|attr('x') }}", f"template expression (filter) is not allowed; {ONLY}"),
            ("self", "{{ self }}", f"unknown variable 'self'; {ONLY}"),
            ("concat", "{{ env ~ tag }}", f"template expression (concat) is not allowed; {ONLY}"),
            ("for", "{% for x in y %}{{ x }}{% endfor %}", f"template statements (for) are not allowed; {ONLY}"),
            ("comment", "Start {# why #} it", f"template comments ({{# ... #}}) are not allowed; {ONLY}"),
            ("raw", "{% raw %}{{ x }}{% endraw %}", "template raw blocks ({% raw %}) are not allowed"),
            ("whitespace-control", "Start {{- env }}", "whitespace control ({{- or -}}) is not allowed"),
            ("undefined", "{{ owner }}", f"unknown variable 'owner'; {ONLY}"),
            ("unclosed", "{{ env", "invalid template: unexpected end of template"),
        )
    ],
    pytest.param(
        edit("ghcr.io/{{ repository }}", "{{ registry }}/{{ repository }}"),
        [f"{X}:4:8: image: unknown variable 'registry'; {ONLY}"],
        id="template-in-image",
    ),
    pytest.param(
        edit("plan: runtime", '"{{ env }}": runtime'),
        [f"{X}:1:1: missing required key 'plan'", f"{X}:2:1: {{{{ env }}}}: unknown key '{{{{ env }}}}'; {TOP_KEYS}"],
        id="template-in-key-is-not-rendered",
    ),
    # -- hostile files
    pytest.param(
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + BILLION_LAUGHS,
        [f"{X}:2:8: aliases (*name) are not allowed in plans; write the value out"],
        id="billion-laughs",
    ),
    pytest.param(
        edit("Pull the runtime image", "&n Pull the runtime image").replace("Start the new runtime", "*n"),
        [f"{X}:12:11: aliases (*name) are not allowed in plans"],
        id="alias",
    ),
    pytest.param(
        "a: " + "[" * 5000 + "]" * 5000 + "\n", [f"{X}:1:34: nested more than 32 levels deep"], id="deep-nesting"
    ),
    pytest.param("a: [" + ", ".join(["1"] * 3000) + "]\n", [f"{X}:1:1: more than 2000 YAML nodes"], id="many-nodes"),
    pytest.param(
        # Found as a new user: Jinja's parser recursed until Python gave up (exit 1, RecursionError).
        name('"{{ ' + "(" * 3000 + "env" + ")" * 3000 + ' }}"'),
        [f"{X}:12:11: steps[2].name: the template nests too deeply; {ONLY}"],
        id="deeply-nested-expression",
    ),
    pytest.param(
        PLAN + "#" * (10 * 1024 * 1024 - len(PLAN) - 1) + "\n",
        [f"{X}:1:1: file is 10485760 bytes; a plan may have at most 65536"],
        id="10-mb",
    ),
    pytest.param(
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00", [f"{X}:1:8: binary file (it contains NUL bytes)"], id="binary"
    ),
    pytest.param(
        name("St\xe4rt").encode("latin-1"), [f"{X}:12:13: not UTF-8 text (invalid byte 0xe4)"], id="not-utf-8"
    ),
]
LINTED = {
    "malformed-flow",
    "dup-in-step",
    "empty",
    "list",
    "three-steps",
    "unknown-action",
    "step-privileged",
    "bool-timeout",
    "stable-for-above-timeout",
    "missing-option",
    "image-latest",
    "name-81",
    "template-cycler",
    "billion-laughs",
    "not-utf-8",
    "10-mb",
    "deeply-nested-expression",
}


def _write(workspace: Path, content: str | bytes) -> None:
    path = workspace / X
    if isinstance(content, str):
        path.write_text(content, "utf-8")
    else:
        path.write_bytes(content)


def _assert_clean_failure(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "internal error" not in stderr


def test_the_base_plan_renders(cli: Cli, workspace: Path) -> None:
    _write(workspace, PLAN)
    result = cli.run(*RENDER, cwd=workspace)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(("content", "expected"), CASES)
def test_bad_plan_is_refused(
    cli: Cli, workspace: Path, content: str | bytes, expected: list[str], request: pytest.FixtureRequest
) -> None:
    _write(workspace, content)
    result = cli.run(*RENDER, cwd=workspace)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    _assert_clean_failure(result.stderr)
    for fragment in expected:
        assert fragment in result.stderr
    if request.node.callspec.id in LINTED:
        lint = cli.run("lint", X, "--repository", "acme/trader", cwd=workspace)
        assert lint.returncode == 1, lint.stdout + lint.stderr
        assert lint.stderr.splitlines() == result.stderr.splitlines()


def test_lint_names_every_bad_file_of_a_folder(cli: Cli, workspace: Path) -> None:
    (workspace / "plans" / "a.yaml").write_text(edit("stable_for: 5", "stable_for: 61"))
    (workspace / "plans" / "b.yml").write_text(PLAN + "privileged: true\n")
    result = cli.run("lint", cwd=workspace)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "plans/a.yaml:17:17: steps[3].stable_for: 61 is above the step's timeout (60); it must fit in it",
        f"plans/b.yml:18:1: privileged: unknown key 'privileged'; {TOP_KEYS}",
    ]


BAD_ARGUMENTS = [
    *[
        pytest.param(
            "--tag",
            tag,
            f"--tag: {tag!r}: tag must be a full 40-hex commit SHA or a semantic version",
            id=f"tag-{label}",
        )
        for label, tag in (
            ("latest", "latest"),
            ("v-prefix", "v1.0.0"),
            ("short-sha", "abc1234"),
            ("shell", "1.0.3;rm -rf /"),
            ("substitution", "$(id)"),
            ("template", "{{ env }}"),
            ("newline", "1.0.3\n"),
            ("glob", "*"),
            ("41-hex", "a" * 41),
            ("uppercase-sha", "A" * 40),
            ("two-parts", "1.0"),
            ("leading-zero", "01.0.0"),
        )
    ],
    *[
        pytest.param("--env", env, f"--env: {env!r} is not an environment; use one of dev, prod", id=f"env-{label}")
        for label, env in (("staging", "staging"), ("upper", "PROD"), ("empty", ""))
    ],
    *[
        pytest.param("--repository", repository, f"--repository: {repository!r} is not owner/repo", id=f"repo-{label}")
        for label, repository in (("one-part", "nope"), ("three-parts", "a/b/c"), ("space", "a b/c"))
    ],
]


@pytest.mark.parametrize(("option", "value", "expected"), BAD_ARGUMENTS)
def test_bad_argument_is_refused(cli: Cli, workspace: Path, option: str, value: str, expected: str) -> None:
    args = {"--env": "dev", "--tag": "1.0.0", "--repository": "acme/trader", option: value}
    result = cli.run("render", "plans/runtime.yaml", *(part for item in args.items() for part in item), cwd=workspace)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    _assert_clean_failure(result.stderr)
    [line] = result.stderr.splitlines()
    assert line.startswith(f"command line: {expected}")  # a flag is not the plan file's fault


def test_lint_with_a_bad_repository_is_a_usage_error(cli: Cli, workspace: Path) -> None:
    result = cli.run("lint", "--repository", "a b/c", cwd=workspace)
    assert result.returncode == 2
    assert (
        result.stderr == "error: --repository: 'a b/c' is not owner/repo (e.g. acme/trader, from GITHUB_REPOSITORY)\n"
    )
