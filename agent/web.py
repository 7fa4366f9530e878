"""The read-only page for a person: what runs, what was deployed by whom, why a deploy failed, the runtime's log.

Server-rendered Jinja2 with autoescaping; no JavaScript, no external assets, nothing that changes state (every
write stays in the CLI and the API). It reads through the same `Reads` as `/v1`, so it shows the same masked text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, render_template
from markupsafe import Markup

from agent.services import current as services
from runner import __version__
from runner.core.text import visible
from runner.core.times import parse, seconds

web = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static")
NEWEST = 20
LOG_TAIL = 200
# Nothing from elsewhere, nothing inline: the one stylesheet is served by the agent, and no script exists.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@web.get("/")
def index() -> str:
    status = services().reads.status(None)
    deployments = services().reads.history(None, NEWEST)
    return render_template("index.html", status=status, deployments=deployments, now=_now())


@web.get("/deployments/<deployment_id>")
def deployment(deployment_id: str) -> str:
    found = services().reads.deployment(deployment_id)
    return render_template("deployment.html", d=found, timeline=timeline(found), now=_now())


@web.get("/environments/<env>/logs")
def logs(env: str) -> str:
    found = services().reads.logs(env, tail=LOG_TAIL, since=None)  # NotFound for an environment not served
    return render_template("logs.html", logs=found, now=_now())


def error_page(status: int, code: str, message: str, details: list[dict[str, str]]) -> Response:
    """An error as a page, for a person's browser; the same words as the JSON error of the API."""
    body = render_template("error.html", status=status, code=code, message=message, details=details, now=_now())
    return Response(body, status=status, content_type="text/html; charset=utf-8")


def timeline(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Each step with its duration, and where it starts and how long it is on a scale of the whole deployment
    (percent), so that the bars are drawn to scale."""
    start, end = parse(d.get("created_at")), parse(d.get("finished_at"))
    bars = []
    steps = d.get("steps") or []
    ended_at = [t for t in (parse(s.get("finished_at")) for s in steps) if t is not None]
    last = max(ended_at, default=None)
    end = end or last or start
    total = (end - start).total_seconds() if start and end else 0.0
    for step in steps:
        began, length = parse(step.get("started_at")), seconds(step)
        offset = (began - start).total_seconds() if began and start else 0.0
        bars.append(
            {
                **step,
                "seconds": length,
                "x": round(100 * offset / total, 2) if total > 0 else 0.0,
                "width": max(round(100 * (length or 0) / total, 2), 0.5) if total > 0 else (100.0 if length else 0.0),
            }
        )
    return bars


def ago(value: str | None, now: datetime) -> str:
    """`2026-11-30 10:00:01 UTC (3 min ago)`, or `-`."""
    when = parse(value)
    if when is None:
        return "-"
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        relative = "just now"
    elif seconds < 90:
        relative = f"{seconds} s ago"
    elif seconds < 90 * 60:
        relative = f"{round(seconds / 60)} min ago"
    elif seconds < 36 * 3600:
        relative = f"{round(seconds / 3600)} h ago"
    else:
        relative = f"{round(seconds / 86400)} days ago"
    return f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({relative})"


def took(deployment: dict[str, Any]) -> str:
    """How long a deployment took, from its request to its final record."""
    found = seconds(deployment, start="created_at")
    if found is None:
        return "-"
    return f"{found:.1f} s" if found < 120 else f"{found / 60:.1f} min"


def github_run(url: Any) -> str | None:
    """The origin's run URL, only when it is a GitHub one (anything else stays text, never a link)."""
    return url if isinstance(url, str) and url.startswith("https://github.com/") else None


def shown(value: Any) -> Any:
    """Every value the templates print: bidi and invisible format characters escaped (the CLI's `visible`), so a
    U+202E in an origin's actor cannot reverse the "via <real actor>" beside it. Autoescaping still follows."""
    if isinstance(value, Markup):
        return Markup(visible(str(value)))  # a macro's output: its text was escaped already, its tags stay
    return visible(value) if isinstance(value, str) else value


def _now() -> datetime:
    return datetime.now(UTC)


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(web)
    app.jinja_env.finalize = shown
    app.jinja_env.globals.update(ago=ago, took=took, github_run=github_run, version=__version__)
    app.after_request(_security_headers)
