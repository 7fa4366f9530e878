"""The Flask app factory: `gunicorn 'agent.app:create_app()'` calls it once per worker."""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask, Response, g, request

from agent import api, web
from agent.config import Config, load_config
from agent.dockerio import Connect
from agent.http import register_error_handlers
from agent.logs import Stopwatch, log, setup_logging
from agent.services import Services
from runner.core.text import shorten

MAX_BODY = 256 * 1024


def create_app(
    config: Config | None = None, *, environ: Mapping[str, str] | None = None, docker_connect: Connect | None = None
) -> Flask:
    """Build the app from a Config, else from the environment (raises ConfigError naming every problem).

    `docker_connect` makes the Docker client; tests of the HTTP contract pass a recording one.
    """
    setup_logging()
    # The mount sources are checked when the agent starts (`deploy-agent`) and before each deploy, not at each
    # worker's boot: a worker that boots (or is respawned) after a source went missing must not bring the whole
    # agent down (gunicorn stops when a worker fails to boot); deploys answer 503 server_not_ready instead.
    config = config or load_config(os.environ if environ is None else environ, check_sources=False)
    app = Flask("deploy_agent", static_folder=None)  # the page blueprint serves its own stylesheet
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["deployplan"] = Services.open(config, docker_connect=docker_connect)
    register_error_handlers(app, page=web.error_page)
    _log_requests(app)
    api.init_app(app)
    web.init_app(app)
    log(
        "agent started",
        environments=list(config.environments),
        auth=config.auth,
        state_dir=str(config.state_dir),
    )
    return app


def _log_requests(app: Flask) -> None:
    @app.before_request
    def start_clock() -> None:
        g.clock = Stopwatch()

    @app.after_request
    def log_request(response: Response) -> Response:
        clock = g.get("clock")
        log(
            "request",
            method=request.method,
            path=shorten(request.path),
            status=response.status_code,
            actor=g.get("actor"),
            duration_ms=clock.ms() if clock else None,
        )
        return response
