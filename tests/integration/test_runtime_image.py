"""The example runtime image, for real: the Docker Engine and a local registry."""

from __future__ import annotations

import gc
import secrets
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import pytest
import requests
from docker.models.containers import Container

import lab

EX_CONFIG = 78
TOKEN = f"canary-{secrets.token_hex(16)}"
GOOD_ENV = {
    "RUNTIME_ENV": "dev",
    "RUNTIME_LOG_LEVEL": "info",
    "RUNTIME_API_TOKEN": TOKEN,
}
REQUIRED = ("RUNTIME_API_TOKEN", "RUNTIME_ENV", "RUNTIME_LOG_LEVEL")
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    # Not reachable is a failure, never a skip.
    try:
        client = docker.from_env()
    except docker.errors.DockerException as e:
        error = str(e)
    else:
        try:
            client.ping()
            error = ""
        except (docker.errors.DockerException, requests.RequestException) as e:
            client.close()
            error = str(e)
    if error:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()  # the half-built client's socket
        pytest.fail(f"Docker Engine not reachable: {error}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="module")
def run_id() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="module")
def registry() -> Iterator[lab.Registry]:
    registry = lab.Registry()
    try:
        yield registry.start()
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def names(client: docker.DockerClient, run_id: str) -> Iterator[Callable[[str], str]]:
    """Unique container names; every container so named is removed at the end."""
    prefix = f"deployplan-lab-{run_id}-"
    try:
        yield lambda name: prefix + name
    finally:
        lab.remove_containers(client, prefix)


@pytest.fixture(scope="module")
def image(
    client: docker.DockerClient,
    registry: lab.Registry,
    run_id: str,
    names: Callable[[str], str],
) -> Iterator[str]:
    namespace = f"{registry.host}/lab-{run_id}/"
    ref = f"{namespace}runtime:1.0.0"
    try:
        lab.build_runtime_image(client, ref, label=run_id)
        yield ref
    finally:
        # Containers first: they hold the image.
        lab.remove_containers(client, names(""))
        lab.remove_images(client, namespace)


@pytest.fixture(scope="module")
def pushed(client: docker.DockerClient, image: str) -> str:
    return lab.push(client, image)


def run(client: docker.DockerClient, image: str, name: str, env: dict[str, str]) -> Container:
    container: Container = client.containers.run(image, name=name, environment=env, detach=True)
    return container


def exit_code(container: Container, timeout: float = 10) -> int:
    return int(container.wait(timeout=timeout)["StatusCode"])


def logs(container: Container) -> str:
    return bytes(container.logs(stdout=True, stderr=True)).decode()


def wait_for_health(container: Container, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    current = None
    while time.monotonic() < deadline:
        container.reload()
        current = container.attrs["State"].get("Health", {}).get("Status")
        if current == status:
            return
        time.sleep(0.2)
    pytest.fail(f"{container.name}: health {current!r}, expected {status!r}\n{logs(container)}")


def assert_no_secret(output: str, secret: str) -> None:
    """Neither the secret nor any 8-character piece of it appears."""
    for start in range(len(secret) - 7):
        assert secret[start : start + 8] not in output


def pull(client: docker.DockerClient, ref: str) -> list[str]:
    """Pull through the streaming API; return the errors it reported."""
    repository, tag = lab.split_ref(ref)
    try:
        records: list[dict[str, Any]] = list(client.api.pull(repository, tag=tag, stream=True, decode=True))
    except docker.errors.APIError as e:
        return [str(e.explanation or e)]
    return [str(r.get("errorDetail", {}).get("message") or r["error"]) for r in records if "error" in r]


def manifest_digest(registry: lab.Registry, ref: str) -> str:
    repository, tag = lab.split_ref(ref)
    path = repository.removeprefix(registry.host + "/")
    url = f"http://{registry.host}/v2/{path}/manifests/{tag}"
    request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST_V2})
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_missing_configuration_exits_78_naming_every_variable(
    client: docker.DockerClient, image: str, names: Callable[[str], str]
) -> None:
    container = run(client, image, names("missing"), {})
    try:
        assert exit_code(container) == EX_CONFIG
        output = logs(container)
        for variable in REQUIRED:
            assert f"runtime: {variable} is not set" in output
        assert "runtime: refusing to start: missing " + ", ".join(REQUIRED) in output
        assert "runtime: ready" not in output
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RUNTIME_LOG_LEVEL", "verbose"),
        ("RUNTIME_ENV", "staging"),
        ("RUNTIME_API_TOKEN", "short-secret"),
        ("RUNTIME_FAULT", "explode"),
    ],
)
def test_invalid_value_exits_78_naming_it(
    client: docker.DockerClient,
    image: str,
    names: Callable[[str], str],
    variable: str,
    value: str,
) -> None:
    name = names(f"invalid-{variable.lower().replace('_', '-')}")
    container = run(client, image, name, {**GOOD_ENV, variable: value})
    try:
        assert exit_code(container) == EX_CONFIG
        output = logs(container)
        assert f"runtime: {variable} is invalid" in output
        assert f"runtime: refusing to start: invalid {variable}\n" in output
        assert_no_secret(output, TOKEN)
        if variable == "RUNTIME_API_TOKEN":
            assert value not in output
    finally:
        container.remove(force=True)


def test_good_configuration_becomes_healthy_and_stops_on_sigterm(
    client: docker.DockerClient, image: str, names: Callable[[str], str]
) -> None:
    container = run(client, image, names("good"), GOOD_ENV)
    try:
        wait_for_health(container, "healthy")
        started = time.monotonic()
        container.stop(timeout=10)
        assert time.monotonic() - started < 3
        assert exit_code(container) == 0
        output = logs(container)
        assert "runtime: configuration ok (env=dev, log_level=info, api token set)" in output
        assert "runtime: ready" in output
        assert output.rstrip().endswith("runtime: stopping (SIGTERM)")
        assert_no_secret(output, TOKEN)
    finally:
        container.remove(force=True)


def test_fault_crash_after_2s_exits_1(client: docker.DockerClient, image: str, names: Callable[[str], str]) -> None:
    started = time.monotonic()
    container = run(client, image, names("crash"), {**GOOD_ENV, "RUNTIME_FAULT": "crash-after-2s"})
    try:
        assert exit_code(container) == 1
        assert 2 <= time.monotonic() - started < 6
        assert "runtime: ready" in logs(container)
    finally:
        container.remove(force=True)


def test_fault_unhealthy_turns_health_unhealthy(
    client: docker.DockerClient, image: str, names: Callable[[str], str]
) -> None:
    container = run(client, image, names("unhealthy"), {**GOOD_ENV, "RUNTIME_FAULT": "unhealthy"})
    try:
        wait_for_health(container, "unhealthy")
        container.reload()
        assert container.status == "running"
    finally:
        container.remove(force=True)


def test_push_returns_digest_and_pull_brings_it_back(
    client: docker.DockerClient, registry: lab.Registry, image: str, pushed: str
) -> None:
    assert pushed.startswith("sha256:") and len(pushed) == len("sha256:") + 64
    assert manifest_digest(registry, image) == pushed
    client.images.remove(image)  # pull for real, not from the local store
    assert pull(client, image) == []
    repository, _ = lab.split_ref(image)
    assert f"{repository}@{pushed}" in client.images.get(image).attrs["RepoDigests"]


def test_registry_restart_keeps_storage(
    client: docker.DockerClient, registry: lab.Registry, image: str, pushed: str
) -> None:
    registry.stop(keep_storage=True)
    try:
        assert pull(client, image) != []  # really down
    finally:
        registry.start()
    assert manifest_digest(registry, image) == pushed
    assert pull(client, image) == []
