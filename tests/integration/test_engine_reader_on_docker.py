"""The lean Engine API reader against the real engine: the same answers and errors as the SDK's client."""

from __future__ import annotations

import os

import docker
import docker.errors
import pytest

from agent.enginereader import EngineReader
from realparts import PREFIX, Agent, Images, plan_data


def test_it_answers_as_the_sdk_does(agent: Agent, images: Images, docker_client: docker.DockerClient) -> None:
    agent.deploy(plan_data(images, "1.0.0", stable_for=0))
    name = agent.containers["dev"]
    reader = EngineReader.for_host(os.environ.get("DOCKER_HOST"), tls=False, timeout=5)
    assert reader is not None
    try:
        found = reader.inspect_container(name)
        assert found == docker_client.api.inspect_container(name) | {"State": found["State"]}
        assert (
            reader.inspect_image(found["Image"])["RepoDigests"]
            == docker_client.api.inspect_image(found["Image"])["RepoDigests"]
        )
        with pytest.raises(docker.errors.NotFound):
            reader.inspect_container(f"{PREFIX}-no-such-container")
        reader.close()  # as if the engine had closed the kept connection: the next read reconnects
        assert reader.inspect_container(name)["Name"] == f"/{name}"
    finally:
        reader.close()


def test_tls_and_ssh_are_left_to_the_sdk() -> None:
    assert EngineReader.for_host("tcp://h:2376", tls=True, timeout=5) is None
    assert EngineReader.for_host("ssh://h", tls=False, timeout=5) is None
