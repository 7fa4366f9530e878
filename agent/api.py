"""The `/v1` blueprint and `/healthz`: thin views that authenticate, parse, call the core and answer JSON."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import UnsupportedMediaType

from agent.auth import GITHUB_OIDC_HEADER, may_deploy
from agent.errors import BadRequest, TooManyRequests
from agent.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.metrics import exposition
from agent.prune import check_body as check_prune
from agent.reads import MAX_WAIT
from agent.refusals import READS
from agent.services import current as services
from runner import __version__
from runner.core.times import since_timestamp

v1 = Blueprint("v1", __name__, url_prefix="/v1")
health = Blueprint("health", __name__)
# A plan nests four levels and the request one more; anything far deeper is not a deploy request.
MAX_DEPTH = 16


def authenticate() -> None:
    """Every path but /healthz, matched or not (so a 404 or 405 says nothing to a stranger either): the API, the
    page and its stylesheet."""
    if request.path != "/healthz":
        g.actor = services().auth.authenticate(request.headers)


def limit_refused_writers() -> None:
    """An identity refused more than 30 times in the last minute may read, but not write, until the minute passes;
    the 429 itself is counted, not audited."""
    actor = g.get("actor")
    if actor is None or request.method in READS:
        return
    wait = services().refusals.retry_after(actor)
    if wait is not None:
        services().refusals.suppressed(actor)
        message = f"{actor} was refused more than 30 times in the last minute; try again in {wait} s"
        raise TooManyRequests(message, retry_after=wait)


def count_refusals(response: Response) -> Response:
    """Every 4xx answered to an authenticated identity's request to an operation counts towards its limit. Not a
    401 before authentication (no identity), not a path or method no operation has (404/405 from routing: the
    request reached nothing), not a 409 (a busy lock answers a valid request at the wrong time; a client may ask
    again until it is free). A 429 is counted where it is answered."""
    actor = g.get("actor")
    status = response.status_code
    if actor is not None and request.url_rule is not None and 400 <= status < 500 and status not in (409, 429):
        services().refusals.refused(actor)
    return response


@v1.post("/deploy")
def deploy() -> tuple[Response, int]:
    body = json_body()
    deploy_request = services().admission.check(body, actor=g.actor)
    services().admission.authorize(deploy_request, actor=g.actor)
    token = request.headers.get(GITHUB_OIDC_HEADER)
    if deploy_request.dry_run:
        return jsonify(services().admission.dry_run(deploy_request, actor=g.actor, token=token)), 200
    deploy_request = services().admission.trust(deploy_request, actor=g.actor, token=token)
    return jsonify(services().admission.deploy(deploy_request, actor=g.actor)), 202


@v1.get("/whoami")
def whoami() -> dict[str, Any]:
    """Who the agent thinks the caller is, and what it may do (any authenticated identity)."""
    config = services().config
    environments = list(config.environments)
    return {
        "actor": g.actor,
        "may_deploy": {env: may_deploy(config, g.actor, env) for env in environments},
        "may_prune": all(may_deploy(config, g.actor, env) for env in environments),
        "environments": environments,
        "repository": config.image_repository,
        "version": __version__,
        "github_oidc": config.github_oidc,
    }


@v1.post("/prune")
def prune() -> Response:
    keep, dry_run = check_prune(json_body())
    return jsonify(services().pruner.prune(keep=keep, dry_run=dry_run, actor=g.actor))


@v1.get("/deployments/<deployment_id>")
def deployment(deployment_id: str) -> Response:
    wait = int_param("wait", 0, int(MAX_WAIT), default=0)
    after = int_param("after", 0, 2**62, default=None)
    return jsonify(services().reads.deployment(deployment_id, wait=wait, after=after))


@v1.get("/deployments")
def deployments() -> Response:
    limit = int_param("limit", 1, 200, default=20)
    return jsonify({"deployments": services().reads.history(request.args.get("env"), limit)})


@v1.get("/status")
def status() -> Response:
    return jsonify(services().reads.status(request.args.get("env")))


@v1.get("/audit")
def audit() -> Response:
    after = int_param("after", 0, 2**62, default=0)
    records, more = services().reads.audit_records(after)
    return jsonify({"records": records, "more": more})


@v1.get("/logs/<env>")
def logs(env: str) -> Response:
    tail = int_param("tail", 1, 5000, default=200)
    since = since_param(request.args.get("since"))
    return jsonify(services().reads.logs(env, tail=tail, since=since))


@v1.get("/metrics")
def metrics() -> Response:
    return Response(exposition(services().metrics), content_type=METRICS_CONTENT_TYPE)


@health.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"ok": True}


def json_body() -> Any:
    """The request's JSON body: 415 when it is not JSON, 400 when it does not parse or nests absurdly deep."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the request as Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    if body is None:
        raise BadRequest("the body is not valid JSON")
    if _depth(body) > MAX_DEPTH:
        raise BadRequest(f"the body is nested more than {MAX_DEPTH} levels deep")
    return body


def int_param(name: str, low: int, high: int, *, default: int | None) -> Any:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def since_param(raw: str | None) -> float | None:
    """`since`: a number of seconds back, or an RFC 3339 time; a Unix time for Docker."""
    if raw is None:
        return None
    found = since_timestamp(raw, now=time.time())
    if found is None:
        raise BadRequest("since must be a number of seconds back (e.g. 600) or an RFC 3339 time with its offset")
    return found


def _depth(value: Any) -> int:
    """How deeply a JSON value nests, counted without recursion (a deep body must not crash anything)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def init_app(app: Flask) -> None:
    app.before_request(authenticate)
    app.before_request(limit_refused_writers)
    app.after_request(count_refusals)
    app.register_blueprint(v1)
    app.register_blueprint(health)
