"""The native test brokers (scripts/start-services.sh, tests/services.env) and projects made by
`edaenv init` pointed at them, for the event-plane tests and bench/. A broker that is not
running fails its tests, with the fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDAENV = str(Path(sys.executable).with_name("edaenv"))


def services() -> dict[str, str]:
    values = {}
    for line in (ROOT / "tests" / "services.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


SERVICES = services()
BROKER_URLS = {
    "kafka": f"127.0.0.1:{SERVICES['EDAENV_TEST_KAFKA_PORT']}",
    "rabbitmq": f"amqp://{SERVICES['EDAENV_TEST_AMQP_USER']}:{SERVICES['EDAENV_TEST_AMQP_PASSWORD']}"
    f"@127.0.0.1:{SERVICES['EDAENV_TEST_AMQP_PORT']}/%2F",
    "nats": f"nats://127.0.0.1:{SERVICES['EDAENV_TEST_NATS_PORT']}",
}
PORTS = {
    "kafka": SERVICES["EDAENV_TEST_KAFKA_PORT"],
    "rabbitmq": SERVICES["EDAENV_TEST_AMQP_PORT"],
    "nats": SERVICES["EDAENV_TEST_NATS_PORT"],
    "postgres": SERVICES["EDAENV_TEST_PG_PORT"],
}
DATABASE_URL = (
    f"postgresql://{SERVICES['EDAENV_TEST_PG_USER']}:"
    f"{SERVICES['EDAENV_TEST_PG_PASSWORD']}@127.0.0.1:"
    f"{SERVICES['EDAENV_TEST_PG_PORT']}/{SERVICES['EDAENV_TEST_PG_DB']}"
)


def down(service: str) -> str | None:
    """Why a native service cannot be used, or None when it answers."""
    port = int(PORTS[service])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return (
            f"{service} is not running on 127.0.0.1:{port}: run "
            "scripts/start-services.sh (as root) first"
        )
    return None


def require(service: str) -> None:
    """Fail (never skip) when a native service is down, saying how to start it."""
    problem = down(service)
    if problem:
        pytest.fail(problem, pytrace=False)


def require_quietly(service: str) -> None:
    """The same for scripts (bench/): exit with the reason."""
    problem = down(service)
    if problem:
        raise SystemExit(problem)


@dataclass
class Project:
    """A project made by `edaenv init --defaults --broker X`, on a topic of its own."""

    root: Path
    broker: str
    topic: str
    env: dict[str, str]

    def run(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EDAENV, *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        result = self.run(*args, input=input)
        assert result.returncode == 0, f"edaenv {' '.join(args)}: {result.stderr}"
        return result.stdout

    def tail(self, *args: str) -> list[dict[str, Any]]:
        out = self.ok("tail", self.topic, "--no-follow", "--json", *args)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    @property
    def url(self) -> str:
        return BROKER_URLS[self.broker]


def make_project(tmp_path: Path, broker: str) -> Project:
    require(broker)
    topic = f"t-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "EDAENV_BROKER_URL": BROKER_URLS[broker],
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    env.pop("EDAENV_CONFIG", None)
    result = subprocess.run(
        [EDAENV, "init", "--defaults", "--broker", broker, "--topic", topic, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return Project(root=tmp_path, broker=broker, topic=topic, env=env)
