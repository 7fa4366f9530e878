"""HTTP lives here: the agent's errors mapped to status codes, and the one JSON error body every failure answers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from agent.errors import (
    AgentError,
    AuditBroken,
    AuthUnavailable,
    BadRequest,
    Busy,
    DockerUnavailable,
    Forbidden,
    NotFound,
    Refused,
    ServerNotReady,
    TooManyRequests,
    Unauthorized,
)
from agent.logs import log
from runner.core.text import shorten

ANSWERS: dict[type[AgentError], tuple[int, str]] = {
    BadRequest: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Busy: (409, "deploy_in_progress"),
    Refused: (422, "plan_refused"),
    TooManyRequests: (429, "too_many_requests"),
    DockerUnavailable: (503, "docker_unavailable"),
    AuditBroken: (503, "audit_broken"),
    AuthUnavailable: (503, "auth_unavailable"),
    ServerNotReady: (503, "server_not_ready"),
}
# Werkzeug's own HTTP errors (routing, body size, media type), by status.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "deploy_in_progress",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}
MESSAGES = {413: "the request body is larger than 256 KiB", 404: "no such endpoint"}
DRAIN_LIMIT = 4 * 1024 * 1024
# What a refusal may put in the agent's log: the first findings, each cut short (a body can name 256 KiB of keys).
LOGGED_DETAILS = 20


def answer_for(error: AgentError) -> tuple[int, str]:
    for kind in type(error).__mro__:
        if kind in ANSWERS:
            return ANSWERS[kind]
    return 500, "internal"


def json_error(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "details": details or []}
    response = jsonify({"error": body})
    response.status_code = status
    return response


# How an error is shown: JSON for the API, a page for a person's browser (set by the page blueprint).
Renderer = Callable[[int, str, str, list[dict[str, str]]], Response]


def register_error_handlers(app: Flask, *, page: Renderer | None = None) -> None:
    """Every error, Flask's own included, answers with the same body: JSON for the API (/v1, /healthz), a page
    for a person's browser elsewhere."""

    def render(status: int, code: str, message: str, details: list[dict[str, str]]) -> Response:
        api = request.path in ("/v1", "/healthz") or request.path.startswith("/v1/")
        if page is not None and not api:
            return page(status, code, message, details)
        return json_error(status, code, message, details)

    @app.errorhandler(AgentError)
    def agent_error(error: AgentError) -> Response:
        status, code = answer_for(error)
        log(
            "request refused",
            level=logging.WARNING,
            method=request.method,
            path=shorten(request.path),
            status=status,
            code=code,
            reason=error.message,
            details=[{k: shorten(v) for k, v in d.items()} for d in error.details[:LOGGED_DETAILS]],
        )
        response = render(status, code, error.message, error.details)
        if isinstance(error, TooManyRequests):
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            _drain_body()
        code = HTTP_CODES.get(status, "internal")
        message = MESSAGES.get(status, error.description or error.name)
        log("request refused", level=logging.WARNING, method=request.method, path=shorten(request.path), status=status)
        response = render(status, code, message, [])
        for name, value in error.get_headers():
            if name.lower() != "content-type":  # e.g. the Allow header of a 405
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        # The traceback goes to the log only; the caller learns nothing about the inside.
        log("internal error", level=logging.ERROR, exc_info=True, method=request.method, path=shorten(request.path))
        return render(500, "internal", "internal error; the agent's log has the details", [])


def _drain_body() -> None:
    """Read (a bounded part of) a refused body, so the client gets the 413 instead of a connection reset."""
    stream = request.environ.get("wsgi.input")
    remaining = min(request.content_length or 0, DRAIN_LIMIT)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(65536, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
