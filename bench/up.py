"""Time to healthy: `edaenv up` against bare `docker compose up -d --wait` on the same rendered
file, in the same run, images warm, interleaved rounds (the order alternates).

Both arms are probed from the host meanwhile with real protocol checks (psycopg, a Kafka
ApiVersions request, pika, HTTP), which gives each service's own readiness; the gap is the time
to healthy minus the slowest service's readiness, i.e. what the health checks cost.

    .venv/bin/python bench/up.py [--brokers nats,rabbitmq,kafka] [--rounds 3]

Goal: ratio edaenv/bare <= 1.1; gap <= 2 s. Stand-in images by default
(EDAENV_TEST_IMAGES=official keeps the official ones). Stacks are broker + postgres + prometheus.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edaenv.config import load_config  # noqa: E402
from edaenv.stack.endpoints import environment  # noqa: E402

COMPONENTS = ("postgres", "outbox", "consumer", "jaeger", "prometheus", "grafana")
Probe = Callable[[], bool]


def sh(*command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}{result.stderr}")
    return seconds


def make_project(broker: str, offset: int, images: dict[str, str]) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"bench-up-{broker}-"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    project = f"bench-up-{broker}-{os.getpid()}"
    without = [f"--without={c}" for c in COMPONENTS if c not in ("postgres", "prometheus")]
    sh(
        sys.executable,
        "-m",
        "edaenv",
        "init",
        "--defaults",
        f"--broker={broker}",
        f"--name={project}",
        f"--port-offset={offset}",
        *without,
        cwd=root,
    )
    if images:
        keys = {"broker": f"broker-{broker}", "postgres": "postgres", "prometheus": "prometheus"}
        lines = "".join(f"  {key}: {images[role]}\n" for key, role in keys.items())
        config = root / "edaenv.yaml"
        text = config.read_text().replace("images: {}", "images:\n" + lines.rstrip("\n"), 1)
        config.write_text(text)
    sh(sys.executable, "-m", "edaenv", "render", cwd=root)
    return root


# --- the services' own readiness, probed from the host ----------------------------------


def http_ok(url: str) -> Probe:
    def probe() -> bool:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)

    return probe


def postgres_ok(dsn: str) -> Probe:
    def probe() -> bool:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=1) as conn:
            return conn.execute("select 1").fetchone() == (1,)

    return probe


def kafka_ok(bootstrap: str) -> Probe:
    host, port = bootstrap.rsplit(":", 1)

    def probe() -> bool:
        client = b"bench"
        body = struct.pack(">hhih", 18, 0, 1, len(client)) + client  # ApiVersions v0
        with socket.create_connection((host, int(port)), timeout=1) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", sock.recv(4))[0]
            data = b""
            while len(data) < size:
                chunk = sock.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
            return struct.unpack(">h", data[4:6])[0] == 0  # error code after correlation id

    return probe


def rabbit_ok(url: str) -> Probe:
    def probe() -> bool:
        import pika

        params = pika.URLParameters(url)
        params.socket_timeout = params.blocked_connection_timeout = 1
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        try:
            connection.channel().exchange_declare("orders", passive=True)  # definitions loaded
            return True
        finally:
            connection.close()

    return probe


def probes(root: Path) -> dict[str, Probe]:
    config = load_config(root / "edaenv.yaml")
    env = environment(config)
    broker: Probe = {
        "kafka": lambda: kafka_ok(env["EDAENV_BROKER_URL"])(),
        "rabbitmq": lambda: rabbit_ok(env["EDAENV_BROKER_URL"])(),
        "nats": lambda: http_ok(
            f"{env.get('EDAENV_NATS_MONITOR_URL')}/healthz?js-enabled-only=true"
        )(),
    }[config.broker]
    return {
        "broker": broker,
        "postgres": postgres_ok(env["EDAENV_DATABASE_URL"]),
        "prometheus": http_ok(f"{env['EDAENV_PROMETHEUS_URL']}/-/ready"),
    }


class Watch:
    """Polls every probe every 50 ms from `started` until each has succeeded once."""

    def __init__(self, checks: dict[str, Probe], started: float):
        self.ready: dict[str, float] = {}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(name, check, started), daemon=True)
            for name, check in checks.items()
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, name: str, check: Probe, started: float) -> None:
        while not self.stop.is_set():
            try:
                if check():
                    self.ready[name] = time.perf_counter() - started
                    return
            except Exception:
                pass
            time.sleep(0.05)

    def finish(self, timeout: float = 30) -> dict[str, float]:
        for thread in self.threads:
            thread.join(timeout)
        self.stop.set()
        return self.ready


def one(root: Path, arm: str) -> tuple[float, float, str]:
    """(seconds to healthy, gap to the slowest service's own readiness, slowest service)."""
    if arm == "bare":
        command = ["docker", "compose", "-f", "eda/compose.yaml", "up", "-d", "--wait"]
    else:
        command = [sys.executable, "-m", "edaenv", "up"]
    checks = probes(root)
    started = time.perf_counter()
    watch = Watch(checks, started)
    seconds = sh(*command, cwd=root, env={**os.environ, "CI": "true"})
    ready = watch.finish()
    sh(
        "docker",
        "compose",
        "-f",
        "eda/compose.yaml",
        "down",
        "--volumes",
        "--timeout",
        "2",
        cwd=root,
    )
    missing = set(checks) - set(ready)
    if missing:
        raise SystemExit(f"{arm}: probes never succeeded for {', '.join(sorted(missing))}")
    slowest = max(ready, key=lambda name: ready[name])
    return seconds, seconds - ready[slowest], slowest


def measure(root: Path, broker: str, rounds: int) -> tuple[Any, ...]:
    for arm in ("bare", "edaenv"):  # warm-up, not counted: page cache, first render
        one(root, arm)
    samples: dict[str, list[tuple[float, float, str]]] = {"bare": [], "edaenv": []}
    for round_ in range(rounds):
        order = ("bare", "edaenv") if round_ % 2 == 0 else ("edaenv", "bare")
        for arm in order:
            samples[arm].append(one(root, arm))
    bare = statistics.median(s[0] for s in samples["bare"])
    eda = statistics.median(s[0] for s in samples["edaenv"])
    gap = statistics.median(s[1] for s in samples["edaenv"])
    bare_gap = statistics.median(s[1] for s in samples["bare"])
    slowest = statistics.mode(s[2] for s in samples["edaenv"])
    # Paired by round: load from other processes drifts, a round's two arms share it.
    extra = statistics.median(
        e[0] - b[0] for e, b in zip(samples["edaenv"], samples["bare"], strict=True)
    )
    print(json.dumps({"broker": broker, "samples": samples}), file=sys.stderr)
    worst = max(s[1] for s in samples["edaenv"])
    return broker, bare, eda, eda / bare, extra, slowest, gap, bare_gap, worst


def free_offset() -> int:
    """An offset whose every port is free now (other stacks may run on this machine)."""
    from edaenv.config import BROKER_PORTS, SERVICE_PORTS

    base = {
        p for ports in [*BROKER_PORTS.values(), *SERVICE_PORTS.values()] for p in ports.values()
    }
    # Every port below 32768: above, Linux hands ports out to outgoing connections.
    for offset in range(16081, 500, -61):
        if all(port_free(port + offset) for port in base):
            return offset
    raise SystemExit("no free port offset")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stack_images() -> dict[str, str]:
    """Role -> the stand-in image built from Debian packages (no registry needed); empty with
    EDAENV_TEST_IMAGES=official, which keeps the official images."""
    if os.environ.get("EDAENV_TEST_IMAGES") == "official":
        return {}
    from tests.images.standins import ensure_images

    images: dict[str, str] = ensure_images()
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="nats,rabbitmq,kafka")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = stack_images()
    rows = []
    for broker in args.brokers.split(","):
        root = make_project(broker, free_offset(), images)
        try:
            rows.append(measure(root, broker, args.rounds))
        finally:
            subprocess.run(
                ["docker", "compose", "-f", "eda/compose.yaml", "down", "--volumes"],
                cwd=root,
                capture_output=True,
            )
    print(f"time to healthy, median of {args.rounds} (broker + postgres + prometheus)")
    print(
        f"{'broker':<9} {'bare s':>7} {'edaenv s':>9} {'ratio':>6} {'extra s':>8}  "
        f"{'slowest':<11} {'gap s':>6} {'bare gap s':>11} {'max gap s':>10}"
    )
    for broker, bare, eda, ratio, extra, slowest, gap, bare_gap, worst in rows:
        print(
            f"{broker:<9} {bare:>7.2f} {eda:>9.2f} {ratio:>6.2f} {extra:>8.2f}  "
            f"{slowest:<11} {gap:>6.2f} {bare_gap:>11.2f} {worst:>10.2f}"
        )
    print(
        "ratio = median edaenv / median bare (goal <= 1.1); extra = median of the per-round "
        "differences;\ngap = time to healthy - the slowest service's own readiness, probed "
        "from the host (goal <= 2 s)"
    )


if __name__ == "__main__":
    main()
