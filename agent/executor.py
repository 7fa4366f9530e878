"""The one executor: performs the steps' actions against the Docker Engine API."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.types

from agent.dockerio import DOCKER_ERRORS, image_digest
from agent.pullstream import PullStream, PullTimedOut
from runner.core.secrets import Secret, reveal
from runner.core.steps import Action

POLL_SECONDS = 0.1
# The client's timeout for a call that names none (create, start, inspect, update); stop adds its grace to it.
CALL_TIMEOUT = 60


# Docker keeps this much of a healthcheck's output and marks a cut with "..." (seen on the engine: 5000 bytes
# printed, 4096 + "..." kept).
HEALTH_OUTPUT_BYTES, HEALTH_CUT_MARK = 4096, "..."


class ActionFailed(Exception):
    """An action did not do what it said; the message says why, in words an operator can act on. `cut`: the message
    ends with text from the runtime that Docker cut short (a healthcheck's output), so a secret may end there in
    part."""

    def __init__(self, message: str, *, cut: bool = False) -> None:
        super().__init__(message)
        self.cut = cut


class Executor:
    """Performs actions; the runtime's variable values are unwrapped here and nowhere else."""

    def __init__(
        self,
        *,
        connect: Callable[..., docker.APIClient],
        env: Mapping[str, str | Secret],
        registry_auth: dict[str, str | Secret] | None,
    ) -> None:
        self._connect = connect
        self._env = env
        self._registry_auth = registry_auth
        self._kept: docker.APIClient | None = None

    def client(self) -> docker.APIClient:
        """One client for the whole deployment (a new one per action costs a few ms each): each call that may
        wait long (a pull, a stop, the verify polls) carries its own timeout."""
        if self._kept is None:
            self._kept = self._connect(timeout=CALL_TIMEOUT)
        return self._kept

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def perform(self, action: Action) -> dict[str, Any]:
        """Do one action; returns what it learned (a digest, a container id); raises ActionFailed."""
        handler: Callable[..., dict[str, Any]] = getattr(self, f"_{action.kind}")
        try:
            return handler(**action.options)
        except ActionFailed:
            raise
        except DOCKER_ERRORS as e:
            raise ActionFailed(f"Docker: {_explain(e)}") from e

    def _nothing(self) -> dict[str, Any]:
        return {}

    def _pull(self, *, repository: str, tag: str, timeout: int, known_digest: str | None) -> dict[str, Any]:
        stream_digest: str | None = None
        auth = {k: reveal(v) for k, v in self._registry_auth.items()} if self._registry_auth else None
        client = self.client()
        try:
            # The engine's streaming pull, bounded from outside: the SDK's own pull waits without a timeout.
            with PullStream(client, repository, tag, auth=auth, deadline=time.monotonic() + timeout) as records:
                for record in records:
                    if "error" in record or "errorDetail" in record:
                        detail = record.get("errorDetail", {}).get("message") or record.get("error")
                        raise ActionFailed(f"pull of {repository}:{tag} failed: {detail}")
                    if str(record.get("status", "")).startswith("Digest: "):
                        # The registry's word for what this tag names now (an image may carry several).
                        stream_digest = record["status"].removeprefix("Digest: ").strip()
        except PullTimedOut:
            raise ActionFailed(
                f"pull of {repository}:{tag} did not finish within its timeout of {timeout} s; the connection "
                "to Docker was closed, which stops the pull"
            ) from None
        digest = stream_digest or image_digest(client, f"{repository}:{tag}", repository=repository)
        if digest is None:
            raise ActionFailed(f"pulled {repository}:{tag} but Docker reports no registry digest for it")
        if known_digest and digest != known_digest:
            raise ActionFailed(
                f"the tag {tag} was moved in the registry: it was deployed before as {known_digest} and now names "
                f"{digest}; tags are immutable here, push a new tag and deploy that"
            )
        return {"digest": digest}

    def _stop(self, *, container: str, timeout: int) -> dict[str, Any]:
        self.client().stop(container, timeout=timeout)  # the SDK waits the client's timeout plus the grace
        return {}

    def _remove(self, *, container: str) -> dict[str, Any]:
        self.client().remove_container(container, force=True)
        return {}

    def _create(
        self,
        *,
        name: str,
        image: str,
        binds: list[str],
        restart_policy: str,
        log_config: dict[str, Any] | None,
        labels: dict[str, str],
        env_names: list[str],
    ) -> dict[str, Any]:
        environment = {n: reveal(self._env[n]) for n in env_names}
        client = self.client()
        host_config = client.create_host_config(
            mounts=[_bind_mount(bind) for bind in binds], restart_policy={"Name": restart_policy}, log_config=log_config
        )
        created = client.create_container(
            image, name=name, environment=environment, labels=labels, host_config=host_config, detach=True
        )
        return {"container_id": created["Id"]}

    def _start(self, *, name: str) -> dict[str, Any]:
        self.client().start(name)
        return {}

    def _wait_stable(self, *, container: str, timeout: int, stable_for: int) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        running_since: float | None = None
        client = self.client()
        while True:
            attrs = client.inspect_container(container)
            state, restarts = attrs["State"], int(attrs.get("RestartCount", 0))
            health = (state.get("Health") or {}).get("Status")
            if restarts:
                raise ActionFailed(f"{container} restarted {restarts} time(s) (last exit code {state.get('ExitCode')})")
            if state["Status"] in ("exited", "dead"):
                raise ActionFailed(f"{container} exited with code {state.get('ExitCode')}")
            if health == "unhealthy":
                output, cut = last_health_output(state)
                raise ActionFailed(f"{container} is unhealthy: {output}", cut=cut)
            now = time.monotonic()
            if state["Status"] == "running":
                running_since = running_since if running_since is not None else now
                if now - running_since >= stable_for and health in (None, "healthy"):
                    return {}
            else:
                running_since = None
            if now >= deadline:
                raise ActionFailed(
                    f"{container} was not stable within {timeout} s (state {state['Status']}, "
                    f"health {health or 'none'}, needed {stable_for} s up)"
                )
            time.sleep(POLL_SECONDS)

    def stop_for_inspection(self, container: str, *, timeout: int) -> None:
        """Stop a failed new container and keep it; no restart policy may start it again, even after a reboot."""
        try:
            # Stop first: Docker refuses to update a container while its restart policy is restarting it,
            # and an explicitly stopped container is not restarted by its policy (until dockerd restarts).
            self.client().stop(container, timeout=timeout)
            self.client().update_container(container, restart_policy={"Name": "no"})
        except DOCKER_ERRORS as e:
            raise ActionFailed(f"could not stop {container}: {_explain(e)}") from e


def _bind_mount(bind: str) -> docker.types.Mount:
    """`SOURCE:TARGET:MODE` as a Mounts API bind: unlike `Binds`, the engine refuses a missing source instead of
    creating it (as root, 0755: a folder the runtime's user could not write to)."""
    source, target, mode = bind.split(":")
    return docker.types.Mount(target=target, source=source, type="bind", read_only=mode == "ro")


def last_health_output(state: dict[str, Any]) -> tuple[str, bool]:
    """The last healthcheck's output on one line, and whether Docker cut it (its mark taken off: the text then ends
    where the cut is, for the masker)."""
    log = (state.get("Health") or {}).get("Log") or []
    raw = str(log[-1].get("Output", "")) if log else ""
    cut = raw.endswith(HEALTH_CUT_MARK) and len(raw.encode("utf-8", "surrogatepass")) > HEALTH_OUTPUT_BYTES
    output = raw.removesuffix(HEALTH_CUT_MARK) if cut else raw.strip()
    return (" | ".join(output.splitlines()) if output else "no check output"), cut


def _explain(error: BaseException) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error).strip()
