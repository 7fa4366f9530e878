"""The `/v1` blueprint and `/healthz`: thin views that authenticate, parse, call the service and answer JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from agent.errors import ApiError
from agent.service import Service

v1 = Blueprint("v1", __name__, url_prefix="/v1")
health = Blueprint("health", __name__)
# A plan nests four levels and the request one more; anything far deeper is not a deploy request.
MAX_DEPTH = 16


def service() -> Service:
    found: Service = current_app.extensions["deployplan"]
    return found


def authenticate() -> None:
    """Every /v1 path, matched or not (so a 404 or 405 says nothing to a stranger either)."""
    if request.path == "/v1" or request.path.startswith("/v1/"):
        g.actor = current_app.extensions["deployplan.auth"].authenticate(request.headers)


@v1.post("/deploy")
def deploy() -> tuple[Response, int]:
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request as Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    if body is None:
        raise ApiError(400, "bad_request", "the body is not valid JSON")
    if _depth(body) > MAX_DEPTH:
        raise ApiError(400, "bad_request", f"the body is nested more than {MAX_DEPTH} levels deep")
    deploy_request = service().check(body, actor=g.actor)
    if deploy_request.dry_run:
        return jsonify(service().dry_run(deploy_request)), 200
    return jsonify(service().deploy(deploy_request, actor=g.actor)), 202


@v1.get("/deployments/<deployment_id>")
def deployment(deployment_id: str) -> Response:
    return jsonify(service().deployment(deployment_id))


@v1.get("/status")
def status() -> Response:
    return jsonify(service().status(request.args.get("env")))


@v1.get("/audit")
def audit() -> Response:
    raw = request.args.get("after", "0")
    if not (raw.isascii() and raw.isdigit()):
        raise ApiError(400, "bad_request", "after must be a non-negative integer (a seq)")
    return jsonify({"records": service().audit_records(int(raw))})


@health.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"ok": True}


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
    app.register_blueprint(v1)
    app.register_blueprint(health)
