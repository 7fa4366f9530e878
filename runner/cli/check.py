"""`deployplan check`: prove the setup before the first real deploy; changes nothing, one line per check.

This module gathers (files, this process's variables, the agent's answers, GitHub's settings); the verdicts are
the pure functions of runner.cli.preflight and runner.cli.agentchecks; the report is printed once at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping

from runner import __version__
from runner.cli import agentchecks, github, oidc, preflight
from runner.cli.client import AgentClient, ApiFailure, Redirected, agent_url, connect
from runner.cli.console import Console
from runner.cli.deploy import ask_dry_run
from runner.cli.errors import AgentRefused, AgentUnreachable, Exit, UsageError
from runner.cli.lint import SAMPLE_TAG, lint
from runner.cli.preflight import Check, fail, ok, warn
from runner.cli.workflowcheck import DEFAULT_PATH as WORKFLOW_PATH
from runner.core.envschema import EnvSchema, load_env_schema
from runner.core.errors import InvalidInput
from runner.core.plan import Plan, load_plan, read_plan_file
from runner.core.render import check_inputs
from runner.core.secrets import Secret, reveal
from runner.core.text import printable


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    environ = console.environ
    repository = args.repository or environ.get("GITHUB_REPOSITORY") or None
    _, bad = check_inputs(env=args.env, tag=args.tag or SAMPLE_TAG, repository=repository, source="")
    if bad:
        raise UsageError("; ".join(f"{p.field}: {p.message}" for p in bad))
    settings = None
    if args.github:
        from runner.cli.githubapi import GitHubApi

        settings = GitHubApi.from_environ(environ, repository=repository)  # usage errors before anything is asked
    schema, values = _secrets_first(args, console)
    checks, plan = _local(args, environ, schema=schema, repository=repository)
    checks += _agent(args, console, plan=plan, values=values)
    if settings is not None:
        from runner.cli.githubsettings import github_checks

        parsed = schema if isinstance(schema, EnvSchema) else None
        checks += github_checks(settings, workflow=WORKFLOW_PATH, schema=parsed)
    _report(console, checks, env=args.env, as_json=args.json)
    return Exit.FAILED if any(c.level == "FAIL" for c in checks) else Exit.OK


def _secrets_first(
    args: argparse.Namespace, console: Console
) -> tuple[EnvSchema | InvalidInput, dict[str, str | Secret]]:
    """The table (or why it does not parse) and the values it lists; in GitHub Actions every secret value is
    masked before anything prints."""
    try:
        schema = load_env_schema(args.env_schema)
    except InvalidInput as e:
        return e, {}
    values, _ = schema.read(console.environ)
    mask(console, [reveal(v) for v in values.values() if isinstance(v, Secret)], as_json=args.json)
    return schema, values


def mask(console: Console, values: list[str], *, as_json: bool) -> None:
    """In GitHub Actions, `::add-mask::` for each secret value, before anything could print it: on stdout, or with
    --json on stderr, so that stdout stays one JSON document (the runner reads workflow commands on both)."""
    if console.github:
        for line in github.mask_lines(values):
            (console.error if as_json else console.print)(line)


def _local(
    args: argparse.Namespace, environ: Mapping[str, str], *, schema: EnvSchema | InvalidInput, repository: str | None
) -> tuple[list[Check], Plan | None]:
    """The plan lints and renders for ENV, the table parses, every variable is set as it says."""
    checks = _lint(args, repository=repository)
    plan = None
    try:
        tag = args.tag or SAMPLE_TAG
        plan = load_plan(read_plan_file(args.plan), source=str(args.plan), env=args.env, tag=tag, repository=repository)
        sample = "" if args.tag else f" (sample tag {SAMPLE_TAG}: give --tag to check the real one)"
        checks.append(ok("render", f"{args.plan} renders for {args.env}: {plan.image}{sample}"))
    except InvalidInput as e:
        first = e.problems[0].format() if e.problems else "invalid"
        checks.append(fail("render", f"{args.plan} does not render for {args.env}: {first}", _render_fix(first)))
    checks += _variables(args, environ, schema=schema)
    checks.append(preflight.access_pair(environ))
    return checks, plan


def _lint(args: argparse.Namespace, *, repository: str | None) -> list[Check]:
    try:
        problems = lint([args.plan], env_schema=args.env_schema, workflow=WORKFLOW_PATH, repository=repository)
    except UsageError as e:
        return [fail("lint", str(e), "run check from the repository's root, or give --plan")]
    if not problems:
        return [ok("lint", f"{args.plan}, {args.env_schema} and {WORKFLOW_PATH} lint clean")]
    return [fail("lint", p.format(), "fix that line (deployplan lint shows the same)") for p in problems]


def _variables(
    args: argparse.Namespace, environ: Mapping[str, str], *, schema: EnvSchema | InvalidInput
) -> list[Check]:
    if isinstance(schema, InvalidInput):
        reason = schema.problems[0].format() if schema.problems else "invalid"
        return [fail("env schema", f"{args.env_schema} does not parse: {reason}", "fix the table")]
    parsed = ok("env schema", f"{args.env_schema} parses: {len(schema.variables)} variables")
    return [parsed, *preflight.variables(schema, environ, env=args.env)]


def _render_fix(message: str) -> str:
    if "repository" in message:
        return "give --repository owner/repo (GITHUB_REPOSITORY in Actions)"
    return "fix the plan (deployplan render shows the same)"


def _agent(
    args: argparse.Namespace, console: Console, *, plan: Plan | None, values: dict[str, str | Secret]
) -> list[Check]:
    """Everything asked of the agent: reachable through Access, clock, status, whoami, OIDC, the dry run."""
    environ = console.environ
    if not agent_url(args.agent, environ):
        empty = (
            " (set but empty: an empty GitHub secret arrives as an empty string)"
            if "DEPLOY_AGENT_URL" in environ
            else ""
        )
        return [
            fail(
                "agent",
                f"no agent URL{empty}: nothing was asked of the agent",
                "give --agent URL or set DEPLOY_AGENT_URL",
            )
        ]
    if preflight.access_pair(environ).level == "FAIL":
        return [warn("agent", "not asked: the Access token above is incomplete, so no request could pass Access")]
    try:
        client = connect(args.agent, environ)
    except UsageError as e:
        return [fail("agent", f"{e}: nothing was asked of the agent", "fix the setting named")]
    try:
        return _ask_agent(client, args, console, plan=plan, values=values)
    finally:
        client.close()


def _ask_agent(
    client: AgentClient,
    args: argparse.Namespace,
    console: Console,
    *,
    plan: Plan | None,
    values: dict[str, str | Secret],
) -> list[Check]:
    try:
        status = client.status()
    except (AgentUnreachable, AgentRefused) as e:
        return [_unreachable(client.url, e)]
    version = status.get("agent", {}).get("version")
    same = "" if version == __version__ else f"; this CLI is {__version__}"
    checks = [
        ok("agent", f"{client.url} answers: deploy agent {version}{same}"),
        preflight.clock(client.last_date, time.time()),
    ]
    checks += agentchecks.status(status)
    try:
        whoami = client.get("/v1/whoami")
    except ApiFailure as e:
        if e.status == 404:
            return [*checks, fail("whoami", "the agent has no GET /v1/whoami", "upgrade the agent on the server")]
        return [*checks, fail("whoami", str(e), "see the message")]
    except (AgentUnreachable, AgentRefused) as e:
        return [*checks, _unreachable(client.url, e)]
    checks += agentchecks.whoami(whoami, env=args.env, repository=plan.repository if plan else None)
    oidc_checks, token = _oidc(console, agent_mode=whoami.get("github_oidc"), as_json=args.json, tag=args.tag)
    checks += oidc_checks
    if args.tag is None:
        checks.append(warn("registry", "no --tag: the registry was not asked", "give --tag TAG to dry-run that tag"))
    elif plan is not None:
        checks += _dry_run(client, plan, values, console.environ, token=token)
    return checks


def _unreachable(url: str, error: Exception) -> Check:
    """The first answer: Access's login page, a refusal of our credentials, or no agent at all."""
    if isinstance(error, Redirected):
        return fail(
            "agent",
            f"Access did not accept the service token: {url} answered with a redirect to {error.location or 'nowhere'}",
            "set CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET to a service token that the Access application's "
            "Service Auth policy includes (and --agent to the agent's hostname)",
        )
    if isinstance(error, ApiFailure) and error.status == 401:
        return fail(
            "agent",
            f"the agent did not accept the credentials ({error.code}): {error}",
            "with cloudflare-access: DEPLOY_AGENT_ACCESS_TEAM_DOMAIN and DEPLOY_AGENT_ACCESS_AUD on the server must "
            "be the Access application's; with token: DEPLOY_AGENT_TOKEN here must equal the server's",
        )
    return fail("agent", str(error), "check --agent (DEPLOY_AGENT_URL), the tunnel, and that the agent runs")


def _oidc(console: Console, *, agent_mode: object, as_json: bool, tag: str | None) -> tuple[list[Check], Secret | None]:
    """The OIDC settings on both sides and, in the deploy job, the job's token: masked at once, as apply masks it,
    and returned for the dry run to carry (the agent judges it as the deploy's; a dry run never uses it up)."""
    environ = console.environ
    try:
        audience, request_vars = oidc.audience(environ), True  # read as apply reads it: blank is unset
    except UsageError:  # apply would stop with exit 2: a FAIL in the deploy job (a warn elsewhere), said below
        audience, request_vars = oidc.wanted(environ), False
    in_actions = environ.get("GITHUB_ACTIONS") == "true"
    mode = agent_mode if isinstance(agent_mode, str) else None
    checks = agentchecks.oidc(audience=audience, agent_mode=mode, in_actions=in_actions, request_vars=request_vars)
    if not (audience and in_actions and request_vars):
        return checks, None
    try:
        token = oidc.request_token(environ, audience)
    except oidc.TokenUnavailable as e:
        return [*checks, fail("oidc token", str(e), "give the deploy job `permissions: id-token: write`")], None
    mask(console, [reveal(token)], as_json=as_json)
    use = "sent with the dry run below, never printed" if tag else "not sent: give --tag and the agent judges it"
    return [*checks, agentchecks.token_audience(reveal(token), audience, use=use)], token


def _dry_run(
    client: AgentClient,
    plan: Plan,
    values: dict[str, str | Secret],
    environ: Mapping[str, str],
    *,
    token: Secret | None,
) -> list[Check]:
    """The tag at the agent, as `dry-run --agent` asks it: with the job's OIDC token when there is one, so a token
    the deploy would have refused (a wrong DEPLOY_AGENT_GITHUB_*) FAILs here, naming the setting, before apply."""
    try:
        answer = ask_dry_run(client, plan, values, environ, confirm=None, token=token)
    except ApiFailure as e:
        return [agentchecks.dry_run_refused(e.code, str(e), e.details)]
    except (AgentUnreachable, AgentRefused) as e:
        return [fail("dry run", str(e), "check the agent")]
    return agentchecks.dry_run(answer, tag=plan.tag)


def _report(console: Console, checks: list[Check], *, env: str, as_json: bool) -> None:
    failed = sum(c.level == "FAIL" for c in checks)
    if as_json:
        data = {"environment": env, "ok": not failed, "checks": [c.data() for c in checks]}
        console.print(json.dumps(data, indent=2))
    else:
        for check in checks:
            console.print(printable(check.line()))  # other parties' words among them: shown, never acted on
        console.print(
            f"{failed} FAIL, {sum(c.level == 'warn' for c in checks)} warn, {len(checks)} checks: "
            + ("not ready" if failed else "ready")
        )
    if console.github:
        # Each FAIL an `::error::` line, with --json too: there on stderr, so that stdout stays one JSON document
        # (the runner reads workflow commands from both).
        show = console.error if as_json else console.print
        for check in checks:
            if check.level == "FAIL":
                show(github.command("error", f"check {check.name}: {check.reason}; change: {check.fix}"))
        github.append_summary(console.environ.get("GITHUB_STEP_SUMMARY"), summary_table(checks, env=env))


def summary_table(checks: list[Check], *, env: str) -> str:
    """The checks as a markdown table for the job summary. A reason or a change may carry other parties' words
    (the registry's, the agent's, GitHub's): inline code, as apply's summary shows the runtime's, so that they
    cannot draw an image, a link, a heading or bold words there."""
    rows = [f"## deployplan check: {env}", "", "| result | check | reason | change |", "|---|---|---|---|"]
    for c in checks:
        mark = {"ok": "ok", "warn": "warn", "FAIL": "**FAIL**"}[c.level]
        change = github.inline_code(c.fix) if c.fix else ""
        rows.append(f"| {mark} | {github.table_cell(c.name)} | {github.inline_code(c.reason)} | {change} |")
    return "\n".join(rows) + "\n"
