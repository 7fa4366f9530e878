"""The agent's parts for one worker process, opened once by the app factory and shared by its request threads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import current_app

from agent import statedir
from agent.admission import Admission
from agent.auditlog import AuditLog
from agent.auth import Authenticator, make_authenticator
from agent.config import Config
from agent.dockerio import Connect, DockerAccess, connect
from agent.enginereader import EngineReader
from agent.ledger import Ledger
from agent.logs import log
from agent.metrics import AgentCollector
from agent.prune import Pruner
from agent.reads import Reads
from agent.recovery import reconcile
from agent.refusals import RefusalLimit


@dataclass(frozen=True)
class Services:
    """Everything a view calls: who is calling, the read side, deploy admission, pruning, metrics."""

    config: Config
    auth: Authenticator
    ledger: Ledger
    docker: DockerAccess
    reads: Reads
    admission: Admission
    pruner: Pruner
    metrics: AgentCollector
    refusals: RefusalLimit

    @classmethod
    def open(cls, config: Config, *, docker_connect: Connect | None = None) -> Services:
        """Prepare the state directory, repair and replay the audit log, mark a dead deployment interrupted.

        By default Docker is the real Engine, its status reads through the lean reader; a given `docker_connect`
        (the tests' recording Docker) serves every call.
        """
        statedir.prepare(config.state_dir)
        lock_path = config.state_dir / statedir.LOCK_FILE
        ledger = Ledger(AuditLog(config.state_dir / statedir.AUDIT_FILE))
        ledger.repair()
        ledger.read(lambda s: None)  # replay the log: every record is verified as it is folded
        if ledger.broken:
            log("audit log broken: deploys refused until an operator acts", level=logging.ERROR, reason=ledger.broken)
        reconcile(ledger, lock_path)
        github = None
        if config.github is not None:
            from agent.oidc import GithubOidcVerifier  # imported here: `off` never loads PyJWT for it

            github = GithubOidcVerifier.from_settings(config.github)
        refusals = RefusalLimit(config.state_dir, ledger)
        refusals.flush()  # the suppressed refusals of a minute that passed while no worker ran
        if docker_connect is None:
            docker = DockerAccess(connect, reader=partial(_lean_reader, config))
        else:
            docker = DockerAccess(docker_connect)
        return cls(
            config=config,
            auth=make_authenticator(config),
            ledger=ledger,
            docker=docker,
            reads=Reads(config=config, ledger=ledger, docker=docker, lock_path=lock_path),
            admission=Admission(config=config, ledger=ledger, docker=docker, lock_path=lock_path, github=github),
            pruner=Pruner(config=config, ledger=ledger, docker=docker, lock_path=lock_path),
            metrics=AgentCollector(config=config, ledger=ledger, docker=docker, lock_path=lock_path),
            refusals=refusals,
        )


def _lean_reader(config: Config) -> Any:
    """The Engine API reader of Docker: the lean one, else (TLS) the SDK's client."""
    found = EngineReader.for_host(config.docker_host, tls=config.docker_tls, timeout=DockerAccess.STATUS_TIMEOUT)
    return found or connect(timeout=DockerAccess.STATUS_TIMEOUT)


def current() -> Services:
    """The parts of the worker serving this request (for the views)."""
    found: Services = current_app.extensions["deployplan"]
    return found
