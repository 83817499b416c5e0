"""The engine is found as the docker CLI finds it: DOCKER_HOST, then the current Docker context
(DOCKER_CONTEXT, else `currentContext` in $DOCKER_CONFIG/config.json), then the default socket.

The contexts are made by the real docker CLI in a DOCKER_CONFIG of the test's own, pointing at a
unix socket the test serves: a forwarder to the real engine (the shared engine keeps its socket),
or nothing at all. The commands run are real edaenv commands against that engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edaenv.engine.discovery import discover
from tests.conftest import run_edaenv

pytestmark = pytest.mark.engine

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HINT = (
    "  hint: start the engine of Docker context '{name}' (Colima: `colima start`), or switch "
    "context: `docker context use NAME` (`docker context ls` lists them)\n"
)


def engine_socket() -> str:
    """The real engine's socket, as the test run reaches it."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    assert host.startswith("unix://"), f"these tests forward a unix socket, not {host}"
    return host[len("unix://") :]


class Forwarder:
    """A unix socket that passes every connection on to the real engine, counting them."""

    def __init__(self, path: Path, target: str):
        self.path, self.target, self.connections = path, target, 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # closed: the test is over
                return
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short directory for sockets (a unix socket path has at most 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="edaenv-sock-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docker CLI's configuration of this test only; no DOCKER_HOST, no DOCKER_CONTEXT."""
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    return config


def docker(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout


def meta_file(config: Path, name: str) -> Path:
    return config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"


@pytest.fixture
def name() -> str:
    """A compose project name no other test uses."""
    return f"edaenv-discovery-{os.urandom(3).hex()}"


@pytest.fixture
def labelled_container(name: str) -> Iterator[str]:
    """A container of the project's compose project, made on the real engine through its
    default socket: what `edaenv status` must find through the context."""
    env = {"DOCKER_HOST": f"unix://{engine_socket()}"}
    image = f"edaenv-test/empty:{os.urandom(4).hex()}"
    empty = subprocess.run(["tar", "-cf", "-", "--files-from", "/dev/null"], capture_output=True)
    imported = subprocess.run(
        ["docker", "import", "-", image],
        input=empty.stdout,
        capture_output=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    container = docker(
        "create",
        "--label",
        f"{PROJECT_LABEL}={name}",
        "--label",
        f"{SERVICE_LABEL}=broker",
        image,
        "/absent",
        env=env,
    ).strip()
    yield container
    docker("rm", "--force", container, env=env)
    docker("rmi", image, env=env)


def test_the_current_context_at_a_non_default_socket_is_used(
    project: Path, docker_config: Path, sockets: Path, name: str, labelled_container: str
) -> None:
    init = run_edaenv("init", "--defaults", "--broker", "nats", "--name", name, cwd=project)
    assert init.code == 0, init.err
    forwarder = Forwarder(sockets / "engine.sock", engine_socket())
    try:
        docker("context", "create", "edaenv-fwd", "--docker", f"host=unix://{forwarder.path}")
        docker("context", "use", "edaenv-fwd")
        status = run_edaenv("status", "--json", cwd=project)
        assert status.code == 1, status.err  # nothing healthy: the broker is only created
        services = {s["service"]: s for s in json.loads(status.out)["services"]}
        assert services["broker"]["state"] == "created"
        assert services["broker"]["id"] == labelled_container
        through_context = forwarder.connections
        assert through_context > 0

        # DOCKER_CONTEXT names the context when none is current.
        docker("context", "use", "default")
        named = run_edaenv("status", "--json", cwd=project, env={"DOCKER_CONTEXT": "edaenv-fwd"})
        assert named.code == 1, named.err
        assert json.loads(named.out)["services"][0]["id"] == labelled_container
        assert forwarder.connections > through_context
    finally:
        forwarder.close()


def test_when_nothing_answers_the_error_names_each_place_looked(
    project: Path, docker_config: Path, sockets: Path
) -> None:
    assert run_edaenv("init", "--defaults", "--broker", "nats", cwd=project).code == 0
    dead = sockets / "dead.sock"
    docker("context", "create", "edaenv-dead", "--docker", f"host=unix://{dead}")
    docker("context", "use", "edaenv-dead")
    for command in (["status"], ["up"], ["down"]):
        result = run_edaenv(*command, cwd=project)
        assert result.code == 4, result.err
        assert result.err == (
            f"error: no Docker engine answers at unix://{dead} (Docker context 'edaenv-dead'): "
            "No such file or directory\n"
            "  looked where the docker CLI looks, in its order:\n"
            "  - DOCKER_HOST: not set\n"
            "  - DOCKER_CONTEXT: not set\n"
            f"  - {docker_config}/config.json: currentContext edaenv-dead\n"
            f"  - Docker context 'edaenv-dead' ({meta_file(docker_config, 'edaenv-dead')}): "
            f"unix://{dead}\n" + HINT.format(name="edaenv-dead")
        )

    # DOCKER_HOST wins over every context, as with the docker CLI.
    env = {"DOCKER_HOST": f"unix://{dead}", "DOCKER_CONTEXT": "edaenv-dead"}
    overridden = run_edaenv("status", cwd=project, env=env)
    assert overridden.code == 4
    assert overridden.err == (
        f"error: no Docker engine answers at unix://{dead} (DOCKER_HOST): "
        "No such file or directory\n"
        "  looked where the docker CLI looks, in its order:\n"
        f"  - DOCKER_HOST=unix://{dead} (Docker contexts not read)\n"
        "  hint: start Docker (Docker Desktop, or `sudo systemctl start docker`), or point "
        "DOCKER_HOST at a running engine\n"
    )

    missing = run_edaenv("status", cwd=project, env={"DOCKER_CONTEXT": "edaenv-gone"})
    assert missing.code == 4
    assert missing.err == (
        "error: Docker context 'edaenv-gone' does not exist\n"
        "  looked where the docker CLI looks, in its order:\n"
        "  - DOCKER_HOST: not set\n"
        "  - DOCKER_CONTEXT=edaenv-gone\n"
        f"  - context store: no {meta_file(docker_config, 'edaenv-gone')}\n"
        "  hint: list the contexts with `docker context ls`, then `docker context use NAME` "
        "(or unset DOCKER_CONTEXT)\n"
    )

    (docker_config / "config.json").write_text('{"currentContext": ', encoding="utf-8")
    broken = run_edaenv("status", cwd=project)
    assert broken.code == 4 and "Traceback" not in broken.err
    assert broken.err.startswith(
        f"error: {docker_config}/config.json: cannot read the Docker CLI's configuration: "
    )
    assert "hint: fix or remove the file (the docker CLI fails on it too)" in broken.err


# Context names the docker CLI accepts.
NAMES = st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.+-]{1,30}\Z").filter(lambda n: n != "default")


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=NAMES, current=st.booleans())
def test_any_context_the_cli_writes_resolves_to_its_host(
    tmp_path: Path, name: str, current: bool
) -> None:
    config = Path(tempfile.mkdtemp(dir=tmp_path))
    env = {"DOCKER_CONFIG": str(config), "HOME": str(tmp_path)}
    host = f"unix:///run/edaenv-{hashlib.sha256(name.encode()).hexdigest()[:8]}.sock"
    docker("context", "create", name, "--docker", f"host={host}", env=env)
    if current:
        docker("context", "use", name, env=env)
    else:
        env["DOCKER_CONTEXT"] = name
    endpoint = discover(env)
    assert (endpoint.host, endpoint.source) == (host, f"Docker context '{name}'")
    # What the docker CLI itself resolves (compose resolves the same way).
    inspected = json.loads(docker("context", "inspect", env=env))
    assert inspected[0]["Endpoints"]["docker"]["Host"] == host
    assert discover({**env, "DOCKER_HOST": "tcp://127.0.0.1:2375"}).host == "tcp://127.0.0.1:2375"
    assert discover({"DOCKER_CONFIG": str(tmp_path / "none")}).source == "the default socket"
