"""Every way edaenv talks to the engine (the compose wrapper, raw Engine API requests, the Docker
SDK) fails with one EngineError that carries what ran and what the engine said, and the CLI
shows both. All against the real engine."""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edaenv.engine import api, compose
from edaenv.engine.status import docker_client
from edaenv.errors import EngineError
from tests.conftest import run_edaenv

BROKEN_COMPOSE = """\
services:
  app:
    image: busybox
    depends_on: [nowhere]
"""


def test_a_failing_compose_command_says_what_ran_and_what_compose_said(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(BROKEN_COMPOSE)
    command = ["docker", "compose", "-f", str(tmp_path / "compose.yaml"), "config", "--quiet"]
    with pytest.raises(EngineError) as caught:
        compose.run(command)
    error = caught.value
    assert error.command == shlex.join(command)
    assert "nowhere" in error.output and "undefined service" in error.output
    assert str(error).startswith(f"`{shlex.join(command)}` failed with exit code ")
    assert str(error).endswith("\n".join(f"  | {line}" for line in error.output.splitlines()))


def test_a_failing_sdk_call_says_what_ran_and_what_the_engine_said() -> None:
    name = f"edaenv-test-missing-{uuid.uuid4().hex[:8]}"
    client = docker_client()
    with pytest.raises(EngineError) as caught, api.sdk_call(f"docker start {name}"):
        client.containers.get(name).start()
    error = caught.value
    assert (error.command, error.output) == (f"docker start {name}", f"No such container: {name}")
    assert str(error) == f"`docker start {name}` failed:\n  | No such container: {name}"


@pytest.fixture
def created_container() -> Iterator[str]:
    """A container that exists but never ran, from an image already on the machine."""
    client = docker_client()
    image = next(tag for image in client.images.list() for tag in image.tags)
    container = client.containers.create(image, name=f"edaenv-test-{uuid.uuid4().hex[:8]}")
    try:
        yield str(container.name)
    finally:
        container.remove(force=True)


def test_an_sdk_call_the_engine_refuses_is_an_engine_error(created_container: str) -> None:
    container = docker_client().containers.get(created_container)
    with (
        pytest.raises(EngineError) as caught,
        api.sdk_call(f"docker unpause {created_container}"),
    ):
        container.unpause()  # it is not even running
    assert caught.value.command == f"docker unpause {created_container}"
    assert "is not paused" in caught.value.output


def test_a_refused_engine_api_request_is_an_engine_error() -> None:
    engine = api.connect()
    with pytest.raises(EngineError) as caught:
        engine.containers({"no-such-filter": ["x"]})
    assert caught.value.command is not None
    assert caught.value.command.startswith("GET /containers/json?")
    assert "no-such-filter" in caught.value.output


def test_the_cli_shows_the_failed_command_and_its_output(project: Path) -> None:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    [compose_file] = project.glob("*/compose.yaml")
    compose_file.write_text(BROKEN_COMPOSE)
    result = run_edaenv("down", cwd=project)
    assert result.code == 1
    assert result.err.startswith("error: `docker compose --project-name ")
    assert f"-f {compose_file}" in result.err
    assert " down --remove-orphans` failed with exit code 1:\n  | " in result.err
    assert "undefined service" in result.err
    assert "Traceback" not in result.err
