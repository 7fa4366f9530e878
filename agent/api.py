"""The `/v1` blueprint and `/healthz`: thin views that authenticate, parse, call the service and answer JSON."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from agent.errors import ApiError
from agent.service import Service

v1 = Blueprint("v1", __name__, url_prefix="/v1")
health = Blueprint("health", __name__)


def service() -> Service:
    found: Service = current_app.extensions["deployplan"]
    return found


@v1.before_request
def authenticate() -> None:
    g.actor = current_app.extensions["deployplan.auth"].authenticate(request.headers)


@v1.post("/deploy")
def deploy() -> tuple[Response, int]:
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request as Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "bad_request", "the body is not valid JSON")
    deploy_request, findings = service().check(body)
    if deploy_request is None:
        if isinstance(body, dict) and body.get("dry_run") is not True:
            plan = body.get("plan")
            service().refuse(
                findings, actor=g.actor, environment=plan.get("environment") if isinstance(plan, dict) else None
            )
        raise ApiError(
            422, "plan_refused", f"the deploy was refused: {len(findings)} finding(s), nothing was touched", findings
        )
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
    if not raw.isdigit():
        raise ApiError(400, "bad_request", "after must be a non-negative integer (a seq)")
    return jsonify({"records": service().audit_records(int(raw))})


@health.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"ok": True}


def init_app(app: Flask) -> None:
    app.register_blueprint(v1)
    app.register_blueprint(health)
