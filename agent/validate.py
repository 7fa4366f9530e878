"""What a deploy request must pass before anything is touched: the plan's checks, then the server's rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.config import Config, Environment
from runner.core.envschema import NAME_PATTERN as ENV_NAME
from runner.core.plan import Plan, check_plan
from runner.core.render import TAG_PATTERN
from runner.core.schema import schema_errors, validator
from runner.core.secrets import Masker, Secret
from runner.core.text import forbidden_character, quoted, shorten

# The limits of env are the request schema's, so the schema and these messages never disagree.
_REQUEST_SCHEMA: Any = validator("deploy-request.schema.json").schema
_ENV_SCHEMA = _REQUEST_SCHEMA["properties"]["env"]
MAX_VALUE = _ENV_SCHEMA["additionalProperties"]["maxLength"]
MAX_VARIABLES = _ENV_SCHEMA["maxProperties"]
MAX_NAME = _ENV_SCHEMA["propertyNames"]["maxLength"]
# A finding names a field the caller sent; its path is cut to this length (a key may be 256 KiB long).
MAX_PATH = 120


@dataclass(frozen=True)
class Finding:
    """One reason to refuse, with the JSON path of the field it is about."""

    path: str
    message: str

    def as_detail(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(frozen=True)
class DeployRequest:
    """A request that passed every check: the plan, the environment it targets, the runtime's variables."""

    plan: Plan
    environment: Environment
    env: dict[str, str | Secret]
    public: frozenset[str]
    origin: dict[str, Any] | None
    dry_run: bool
    # With DEPLOY_AGENT_GITHUB_OIDC=required: the verified token's claims (never the token), `jti` among them.
    github_oidc: dict[str, Any] | None = None

    def started_record(self) -> dict[str, Any]:
        """The fields of its `deployment_started` audit record: variable names, never their values."""
        return {
            "environment": self.environment.name,
            "image": self.plan.image,
            "tag": self.plan.tag,
            "container": self.environment.container,
            "plan": self.plan.name,
            "steps": self.plan.step_names(),
            "env_names": sorted(self.env),
            "public_env": sorted(self.public & set(self.env)),
            "origin": self.origin,
            **({"github_oidc": self.github_oidc} if self.github_oidc is not None else {}),
        }

    def masker(self, *, also: Iterable[str | Secret | None] = ()) -> Masker:
        """Masks every value but the public ones in text from the runtime (too short ones say nothing), and the
        server's own secrets given in `also`."""
        values = [value for name, value in self.env.items() if name not in self.public]
        return Masker(values + [value for value in also if value is not None])


def check_request(body: Any, config: Config) -> tuple[DeployRequest | None, list[Finding]]:
    """Every finding about a request body; a DeployRequest only when there is none."""
    findings = [
        Finding(_json_path(path), message)
        for path, _, message in schema_errors("deploy-request.schema.json", body)
        # The plan's findings come from the plan module; env's are written here, without echoing any value.
        if path[:1] not in (("plan",), ("env",))
    ]
    if not isinstance(body, dict):
        return None, findings
    if "env" in body:
        findings += _env_findings(body["env"])
    if isinstance(body.get("origin"), dict):
        findings += _origin_findings(body["origin"], already={f.path for f in findings})
    plan = None
    if "plan" in body:
        # Plan findings use paths inside the plan document ($.steps[1].action), as the CLI reports them.
        plan_findings = [
            Finding(shorten(p.json_path(), MAX_PATH), p.message) for p in check_plan(body["plan"], source="plan")
        ]
        findings += plan_findings
        if not plan_findings:  # the server's rules need a valid plan; they run whatever else is wrong
            plan = Plan(source="request", data=body["plan"])
            findings += _server_rules(plan, body, config)
    if findings or plan is None:
        return None, findings
    env: dict[str, str | Secret] = {str(name): Secret(value) for name, value in body["env"].items()}
    return DeployRequest(
        plan=plan,
        environment=config.environments[plan.environment],
        env=env,
        public=frozenset(body.get("public_env", ())),
        origin=claimed(body.get("origin")),
        dry_run=bool(body.get("dry_run")),
    ), []


def claimed(origin: Any) -> dict[str, Any] | None:
    """The caller's own account of where a deploy came from, marked as a claim (a verified origin replaces it)."""
    return {**origin, "verified": False} if isinstance(origin, dict) else None


def _server_rules(plan: Plan, body: dict[str, Any], config: Config) -> list[Finding]:
    findings = []
    if plan.repository != config.image_repository:
        findings.append(
            Finding(
                "$.image", f"{plan.repository} is not the repository this agent deploys ({config.image_repository})"
            )
        )
    if not TAG_PATTERN.fullmatch(plan.tag):
        findings.append(Finding("$.image", f"tag {plan.tag!r} must be a full 40-hex commit SHA or a semantic version"))
    if plan.environment not in config.environments:
        served = ", ".join(config.environments)
        findings.append(
            Finding("$.environment", f"this agent does not serve {plan.environment!r} (it serves {served})")
        )
    if plan.environment == "prod" and body.get("confirm") != f"prod:{plan.tag}":
        given = "missing" if "confirm" not in body else quoted(str(body["confirm"]))
        findings.append(Finding("$.confirm", f"a prod deploy needs confirm equal to 'prod:{plan.tag}' ({given})"))
    return findings


def _env_findings(env: Any) -> list[Finding]:
    if not isinstance(env, dict):
        return [Finding("$.env", f'must be an object of NAME: "value" strings, found {type(env).__name__}')]
    findings = []
    for name, value in env.items():
        path = shorten(f"$.env.{name}", MAX_PATH)
        if not ENV_NAME.fullmatch(name):
            findings.append(Finding(path, "not a valid variable name: use ^[A-Z][A-Z0-9_]*$"))
        elif len(name) > MAX_NAME:
            findings.append(Finding(path, f"the name is longer than {MAX_NAME} characters"))
        if not isinstance(value, str):
            findings.append(Finding(path, f"the value must be a string, found {type(value).__name__}"))
        elif "\x00" in value:
            findings.append(Finding(path, "the value contains a NUL character, no process can receive it"))
        elif bad := forbidden_character(value):
            # Named by its place, never shown: the value may be a secret.
            findings.append(Finding(path, f"the value contains {bad}; send it without control characters"))
        elif len(value) > MAX_VALUE:
            findings.append(Finding(path, f"the value is longer than {MAX_VALUE} characters"))
    if len(env) > MAX_VARIABLES:
        findings.append(Finding("$.env", f"{len(env)} variables; at most {MAX_VARIABLES}"))
    return findings


def _origin_findings(origin: dict[Any, Any], *, already: set[str]) -> list[Finding]:
    """A control character or lone surrogate in an origin field, a final newline included (which the schema's
    `$` lets through)."""
    findings = []
    for key, value in origin.items():
        path = shorten(f"$.origin.{key}", MAX_PATH)
        if isinstance(value, str) and path not in already and (bad := forbidden_character(value)):
            findings.append(Finding(path, f"{quoted(value, limit=60)} contains {bad}; remove it"))
    return findings


def _json_path(parts: tuple[str | int, ...]) -> str:
    return shorten("$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts), MAX_PATH)
