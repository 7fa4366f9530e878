"""The agent's domain errors: what went wrong, in the agent's words. `agent.http` maps each to its HTTP answer."""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose; carries a message for the caller."""

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequest(AgentError):
    """The request is malformed: not JSON, a bad query parameter."""


class Unauthorized(AgentError):
    """No valid credentials."""


class Forbidden(AgentError):
    """Authenticated, but not allowed to do this (deploy to that environment, prune)."""


class NotFound(AgentError):
    """No such deployment, environment or endpoint."""


class Refused(AgentError):
    """A deploy request that fails a rule; every finding is in `details` with its JSON path."""


class Busy(AgentError):
    """Another deploy or prune holds the deploy lock."""


class DockerUnavailable(AgentError):
    """The Docker Engine cannot be reached; nothing was done."""


class AuditBroken(AgentError):
    """The audit log's chain is broken, or it cannot be written; nothing was done."""


class TooManyRequests(AgentError):
    """An identity refused too often in the last minute; it may write again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthUnavailable(AgentError):
    """Cloudflare Access's signing keys cannot be loaded (or are too old to trust)."""


class ServerNotReady(AgentError):
    """A server-owned precondition of a deploy (a mount source) is missing; `details` name it, nothing was done."""
