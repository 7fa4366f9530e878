"""The one JSON error type of the API and the handlers that turn every failure into it."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from agent.logs import log

# Werkzeug's HTTP errors, by status, as the API's error codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "deploy_in_progress",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


DRAIN_LIMIT = 4 * 1024 * 1024


def _drain_body() -> None:
    """Read (a bounded part of) a refused body, so the client gets the 413 instead of a connection reset."""
    stream = request.environ.get("wsgi.input")
    remaining = min(request.content_length or 0, DRAIN_LIMIT)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(65536, remaining))
        if not chunk:
            break
        remaining -= len(chunk)


class ApiError(Exception):
    """An answer that is an error: status, code, message and, for refusals, every finding with its JSON path."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def response(self) -> tuple[Response, int]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "details": self.details}
        return jsonify({"error": body}), self.status


def register_error_handlers(app: Flask) -> None:
    """Every error, Flask's own included, answers with the same JSON body."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> tuple[Response, int]:
        log(
            "request refused",
            level=30,
            method=request.method,
            path=request.path,
            status=error.status,
            code=error.code,
            reason=error.message,
            details=error.details[:20],
        )
        return error.response()

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        message = {
            413: "the request body is larger than 256 KiB",
            404: "no such endpoint",
        }.get(status, error.description or error.name)
        if status == 413:
            _drain_body()
        response, status = api_error(ApiError(status, HTTP_CODES.get(status, "internal"), message))
        for name, value in error.get_headers():
            if name.lower() != "content-type":  # e.g. the Allow header of a 405
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> tuple[Response, int]:
        # The traceback goes to the log only; the caller learns nothing about the inside.
        log("internal error", level=40, exc_info=True, method=request.method, path=request.path)
        return ApiError(500, "internal", "internal error; the agent's log has the details").response()
