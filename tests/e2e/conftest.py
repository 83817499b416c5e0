"""End-to-end fixtures: a real Docker engine, compose v2, and stacks made the way users make them.

`make_stack(broker, components)` runs `edaenv init --defaults` in a scratch repository with a
unique project name and port offset, and points the config's `images:` overrides (the feature
users have for registry mirrors) at the locally built stand-ins, so the compose file under test
is exactly what users get. `EDAENV_TEST_IMAGES=official` keeps the official images instead (a
machine that can pull them). Every stack a test made is removed afterwards, by its project
label only, even when the test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edaenv.engine.preflight import port_free

if TYPE_CHECKING:
    from docker import DockerClient

REPO = Path(__file__).resolve().parents[2]
SETUP_ENGINE = REPO / "scripts" / "setup-engine.sh"
STANDINS = REPO / "tests" / "images" / "standins.py"
COMPONENTS = ("postgres", "outbox", "consumer", "jaeger", "prometheus", "grafana")
PROJECT_LABEL = "com.docker.compose.project"
# Offsets 10000 + 53*k: no two base ports of any stack differ by a multiple of 53 up to 5936, so
# stacks on different slots never share a port, and every port stays below Linux's ephemeral
# range (32768+), where outgoing connections could take it.
OFFSET_BASE, OFFSET_STEP, OFFSET_SLOTS = 10000, 53, 113
SLOTS_DIR = Path("/tmp/edaenv-e2e-slots")


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err


def run_edaenv(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> Result:
    """The CLI as CI runs it: a real process, no terminal, CI=true."""
    full_env = {
        **os.environ,
        "CI": "true",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "COLUMNS": "200",
        **(env or {}),
    }
    full_env.pop("EDAENV_CONFIG", None)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "edaenv", *args],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _client() -> DockerClient | None:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException:
        return None
    return client


@pytest.fixture(scope="session")
def docker_engine() -> DockerClient:
    """A reachable Docker engine with compose v2; started by scripts/setup-engine.sh when none
    answers and the tests run as root. Missing: the e2e tests fail, they never skip."""
    client = _client()
    if client is None and os.geteuid() == 0 and SETUP_ENGINE.is_file():
        setup = subprocess.run(["bash", str(SETUP_ENGINE)], capture_output=True, text=True)
        if setup.returncode != 0:
            pytest.fail(f"scripts/setup-engine.sh failed:\n{setup.stderr[-2000:]}", pytrace=False)
        client = _client()
    if client is None:
        pytest.fail(
            "no Docker engine answers (DOCKER_HOST="
            f"{os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}): the "
            "end-to-end tests need one; start Docker, or run `bash scripts/setup-engine.sh`"
            " as root",
            pytrace=False,
        )
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True
    )
    if version.returncode != 0 or not version.stdout.strip().lstrip("v").startswith("2."):
        pytest.fail(
            f"`docker compose version` is not v2 ({version.stdout}{version.stderr}): "
            "run `bash scripts/setup-engine.sh` as root",
            pytrace=False,
        )
    return client


@pytest.fixture(scope="session")
def stack_images(docker_engine: DockerClient) -> dict[str, str]:
    """Role -> image for the `images:` overrides; empty with EDAENV_TEST_IMAGES=official."""
    if os.environ.get("EDAENV_TEST_IMAGES") == "official":
        return {}
    if not STANDINS.is_file():
        pytest.fail(f"{STANDINS} is missing: the stand-in images cannot be built", pytrace=False)
    from tests.images.standins import ensure_images

    try:
        tags: dict[str, str] = ensure_images()
    except Exception as exc:
        pytest.fail(f"building the stand-in images failed: {exc}", pytrace=False)
    return tags


@dataclass
class Stack:
    root: Path
    project: str
    broker: str
    components: tuple[str, ...]
    offset: int
    client: DockerClient
    slot: Path | None = None
    runs: list[Result] = field(default_factory=list)

    @property
    def scaffold(self) -> Path:
        return self.root / "eda"

    def edaenv(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        result = run_edaenv(*args, cwd=self.root, env=env, timeout=timeout)
        self.runs.append(result)
        return result

    def up(self, *args: str, timeout: float = 300) -> Result:
        result = self.edaenv("up", *args, timeout=timeout)
        assert result.code == 0, f"edaenv up failed ({result.code}):\n{result.text}"
        return result

    def env(self) -> dict[str, str]:
        result = self.edaenv("env", "--json")
        assert result.code == 0, result.text
        values: dict[str, str] = json.loads(result.out)
        return values

    def status(self) -> dict[str, Any]:
        result = self.edaenv("status", "--json")
        data: dict[str, Any] = json.loads(result.out)
        return data

    def override(self, text: str) -> None:
        """A compose.override.yaml beside compose.yaml, as users customise their stack."""
        (self.scaffold / "compose.override.yaml").write_text(text, encoding="utf-8")

    def containers(self) -> list[Any]:
        return list(self.client.containers.list(all=True, filters={"label": self.label}))

    def networks(self) -> list[Any]:
        return list(self.client.networks.list(filters={"label": self.label}))

    def volumes(self) -> list[Any]:
        return list(self.client.volumes.list(filters={"label": self.label}))

    @property
    def label(self) -> str:
        return f"{PROJECT_LABEL}={self.project}"

    def destroy(self) -> None:
        """Remove whatever carries this project's label: containers, networks, volumes."""
        subprocess.run(
            [
                "docker",
                "compose",
                "--project-name",
                self.project,
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "2",
            ],
            capture_output=True,
            timeout=300,
        )
        for container in self.containers():
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        for network in self.networks():
            with contextlib.suppress(Exception):
                network.remove()
        for volume in self.volumes():
            with contextlib.suppress(Exception):
                volume.remove(force=True)
        if self.slot is not None:
            self.slot.unlink(missing_ok=True)


MakeStack = Callable[..., Stack]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_stack: the whole stack; runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Full-stack tests last: the slowest, and the ones that need relay and consumer."""
    items.sort(key=lambda item: item.get_closest_marker("full_stack") is not None)


@pytest.fixture
def make_stack(
    tmp_path_factory: pytest.TempPathFactory,
    docker_engine: DockerClient,
    stack_images: dict[str, str],
) -> Iterator[MakeStack]:
    """Factory: make_stack(broker="nats", components=("postgres", "prometheus"), name=None)
    -> an initialised (not started) Stack; all of them are destroyed at teardown."""
    made: list[Stack] = []

    def make(
        broker: str = "nats",
        components: Sequence[str] = ("postgres", "prometheus"),
        *,
        name: str | None = None,
    ) -> Stack:
        project = name or f"e2e-{broker}-{os.urandom(3).hex()}"
        offset, slot = claim_offset()
        root = tmp_path_factory.mktemp(project)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        without = [f"--without={c}" for c in COMPONENTS if c not in components]
        stack = Stack(root, project, broker, tuple(components), offset, docker_engine, slot)
        made.append(stack)
        result = stack.edaenv(
            "init",
            "--defaults",
            f"--broker={broker}",
            f"--name={project}",
            f"--port-offset={offset}",
            *without,
        )
        assert result.code == 0, f"edaenv init failed:\n{result.text}"
        use_images(stack, stack_images)
        return stack

    yield make
    for stack in made:
        stack.destroy()


def use_images(stack: Stack, images: dict[str, str]) -> None:
    if not images:
        return
    roles = {
        "broker": f"broker-{stack.broker}",
        "postgres": "postgres",
        "prometheus": "prometheus",
        "jaeger": "jaeger",
        "python": "python",
    }
    lines = [f"  {key}: {images[role]}" for key, role in roles.items() if role in images]
    config = stack.root / "edaenv.yaml"
    text = config.read_text(encoding="utf-8")
    head, found, tail = text.partition("images: {}")
    assert found, f"no `images: {{}}` line in {config} to override"
    rest = tail.split("\n", 1)[1] if "\n" in tail else ""
    config.write_text(head + "images:\n" + "\n".join(lines) + "\n" + rest, encoding="utf-8")


def claim_offset() -> tuple[int, Path]:
    """A port offset no other stack of any test process on this machine uses (a slot file
    created exclusively holds it) and whose ports are free right now."""
    from edaenv.config import BROKER_PORTS, SERVICE_PORTS

    base = {
        port
        for ports in [*BROKER_PORTS.values(), *SERVICE_PORTS.values()]
        for port in ports.values()
    }
    SLOTS_DIR.mkdir(exist_ok=True)
    for k in random.sample(range(OFFSET_SLOTS), OFFSET_SLOTS):
        slot = SLOTS_DIR / str(k)
        with contextlib.suppress(FileNotFoundError):
            pid = int(slot.read_text() or 0)
            if pid and not _alive(pid):
                slot.unlink(missing_ok=True)
        try:
            fd = os.open(slot, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        offset = OFFSET_BASE + OFFSET_STEP * k
        if all(port_free(port + offset) for port in base):
            return offset, slot
        slot.unlink()
    pytest.fail("no free port offset for another e2e stack", pytrace=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
