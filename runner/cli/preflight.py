"""`deployplan check`'s verdicts: plain data in (variables, the agent's answers), one line per check out.

Nothing here reads the network, the environment or a file: check.py gathers, these functions judge, so every
verdict is tested as a table.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

from runner.cli.client import half_access_token
from runner.core.envschema import EnvSchema, Variable

Level = Literal["ok", "warn", "FAIL"]
CLOCK_LIMIT = 30.0  # seconds; the agent's JWT checks allow 60 s of leeway
LOW_DISK = 1024**3  # bytes; deploy-agent check warns under the same 1 GiB
EMPTY_SECRET = "an empty GitHub secret arrives as an empty string"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, the verdict, why, and for a FAIL what to change."""

    name: str
    level: Level
    reason: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level:<4}  {self.name}: {self.reason}"
        return f"{text}; change: {self.fix}" if self.fix else text

    def data(self) -> dict[str, str]:
        return asdict(self)


def ok(name: str, reason: str) -> Check:
    return Check(name, "ok", reason)


def warn(name: str, reason: str, fix: str = "") -> Check:
    return Check(name, "warn", reason, fix)


def fail(name: str, reason: str, fix: str) -> Check:
    return Check(name, "FAIL", reason, fix)


def variables(schema: EnvSchema, environ: Mapping[str, str], *, env: str) -> list[Check]:
    """Each ENV_SCHEMA variable as its Required column says, judged by `EnvSchema.check`, as dry-run and apply
    judge it (its rule; what the agent refuses whatever the rule, such as a pasted secret's trailing newline): an
    unset optional variable is not checked, a set one is (even empty); an empty required one is missing.

    Where the value comes from in the deploy job: the GitHub Environment's secret of the same name."""
    judged = {p.field: p.message.removesuffix("; nothing was sent") for p in schema.check(environ, environment=env)}
    checks = []
    for var in schema.variables:
        name, value = f"variable {var.name}", environ.get(var.name)
        where = f"the secret {var.name} of the GitHub Environment {env!r} (or export it here)"
        if value is None or (value == "" and var.required):
            if not var.required:
                checks.append(ok(name, "not set (optional)"))
            elif value is None:
                checks.append(fail(name, "required and not set", f"set {where}"))
            else:
                checks.append(
                    fail(name, f"required and set to the empty string ({EMPTY_SECRET})", f"give {where} a value")
                )
            continue
        if var.name in judged:
            checks.append(fail(name, judged[var.name], f"set {where} to a value that passes"))
        elif value == "":
            checks.append(ok(name, f"empty, so not sent (optional; {EMPTY_SECRET})"))
        else:
            checks.append(ok(name, "set" + (" (secret)" if var.secret else "") + _passes(var)))
    return checks


def _passes(var: Variable) -> str:
    return f", passes its rule '{var.rule.text}'" if var.rule is not None else ""


def access_pair(environ: Mapping[str, str]) -> Check:
    """CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET: both set, or both unset (an empty one counts as unset)."""
    half = half_access_token(environ)
    if half is not None:
        return fail(
            "access token",
            f"{half}: no Access headers could be sent",
            "set both, from the same Cloudflare Access service token, or neither",
        )
    if environ.get("CF_ACCESS_CLIENT_ID"):
        return ok("access token", "CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET are both set")
    return ok("access token", "no Cloudflare Access service token (direct access: DEPLOY_AGENT_TOKEN)")


def clock(agent_date: str | None, now: float) -> Check:
    """The difference between this machine's clock and the agent's, from its HTTP Date header."""
    if not agent_date:
        return warn("clock", "the agent's answer has no Date header: the clock difference is unknown")
    try:
        then = email.utils.parsedate_to_datetime(agent_date).timestamp()
    except (TypeError, ValueError):
        return warn("clock", f"the agent's Date header {agent_date!r} cannot be read")
    difference = now - then
    text = f"this machine's clock is {abs(difference):.0f} s {'ahead of' if difference > 0 else 'behind'} the agent's"
    if abs(difference) > CLOCK_LIMIT:
        return warn(
            "clock", f"{text} (over {CLOCK_LIMIT:.0f} s; token checks allow 60 s)", "synchronise both clocks (NTP)"
        )
    return ok("clock", f"{text} (within {CLOCK_LIMIT:.0f} s)")
