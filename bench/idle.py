"""Idle cost: the CPU an idle, healthy stack takes, per service, measured by the engine's own
counters over a window after `up`, in the same run as two baselines: the engine with no stack,
and the same stack with the relay's and consumer's former health checks (`python3 -c` every
second), restored by a compose override.

    .venv/bin/python bench/idle.py [--brokers kafka,rabbitmq,nats] [--seconds 60]

Goal: the whole stack (every component but Grafana) <= 3% of one core. Stand-in images by
default (EDAENV_TEST_IMAGES=official keeps the official ones).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

GOAL = 3.0  # % of one core, the whole stack
SETTLE_S = 10  # after healthy: start-up work (JIT, first scrapes) is not idle cost
COMPONENTS = ("postgres", "outbox", "consumer", "jaeger", "prometheus")
PROBE = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{}/healthz', timeout=2)"
OLD_CHECKS = "services:\n" + "".join(
    f'  {role}:\n    healthcheck:\n      test: ["CMD", "python3", "-c", "{PROBE.format(port)}"]\n'
    for role, port in (("relay", 9464), ("consumer", 9465))
)


def edaenv(*args: str, cwd: Path) -> None:
    env = {**os.environ, "CI": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "edaenv", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"edaenv {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def make_project(broker: str, images: dict[str, str]) -> Path:
    from bench.up import free_offset

    root = Path(tempfile.mkdtemp(prefix=f"bench-idle-{broker}-"))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    edaenv(
        "init",
        "--defaults",
        f"--broker={broker}",
        f"--name=bench-idle-{broker}-{os.getpid()}",
        f"--port-offset={free_offset()}",
        "--without=grafana",
        cwd=root,
    )
    if images:
        roles = {
            "broker": f"broker-{broker}",
            **{k: k for k in ("postgres", "jaeger", "prometheus", "python")},
        }
        lines = "".join(f"  {key}: {images[role]}\n" for key, role in roles.items())
        config = root / "edaenv.yaml"
        config.write_text(config.read_text().replace("images: {}", "images:\n" + lines.rstrip()))
    return root


def host_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def container_cpu(client: docker.DockerClient, project: str) -> dict[str, float]:
    """Service -> CPU seconds its container has used, from the engine's counters."""
    found = {}
    for container in client.containers.list(
        filters={"label": f"com.docker.compose.project={project}"}
    ):
        stats = container.stats(stream=False, one_shot=True)
        service = container.labels["com.docker.compose.service"]
        found[service] = stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
    return found


def window(
    client: docker.DockerClient, project: str | None, seconds: float
) -> tuple[float, dict[str, float]]:
    """% of one core over `seconds`: the machine's, and each service's."""
    before_host = host_busy()
    before = container_cpu(client, project) if project else {}
    time.sleep(seconds)
    host = (host_busy() - before_host) / seconds * 100
    after = container_cpu(client, project) if project else {}
    return host, {name: (after[name] - before.get(name, 0.0)) / seconds * 100 for name in after}


def measure(
    root: Path, client: docker.DockerClient, seconds: float, old_checks: bool
) -> tuple[float, dict[str, float]]:
    override = root / "eda" / "compose.override.yaml"
    if old_checks:
        override.write_text(OLD_CHECKS)
    else:
        override.unlink(missing_ok=True)
    from edaenv.config import load_config

    project = load_config(root / "edaenv.yaml").project
    edaenv("up", "--timeout", "300", cwd=root)
    try:
        time.sleep(SETTLE_S)
        return window(client, project, seconds)
    finally:
        edaenv("down", "--volumes", cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="kafka,rabbitmq,nats")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    from bench.up import stack_images

    images = stack_images()
    client = docker.from_env()
    empty, _ = window(client, None, args.seconds)
    print(f"machine with no stack: {empty:.1f}% of one core over {args.seconds:g} s (noise floor)")
    print(
        f"{'broker':<9} {'arm':<11} {'stack %':>8} {'machine %':>10}  per service (% of one core)"
    )
    for broker in args.brokers.split(","):
        root = make_project(broker, images)
        results = {}
        for arm, old in (("old checks", True), ("edaenv", False)):
            host, services = measure(root, client, args.seconds, old)
            results[arm] = sum(services.values())
            detail = ", ".join(f"{n} {v:.1f}" for n, v in sorted(services.items()))
            print(f"{broker:<9} {arm:<11} {results[arm]:>8.1f} {host:>10.1f}  {detail}")
        met = "met" if results["edaenv"] <= GOAL else "not met"
        ratio = results["edaenv"] / results["old checks"] if results["old checks"] else 0.0
        print(f"{broker:<9} edaenv/old {ratio:.2f}; goal <= {GOAL:g}% for the stack: {met}")
    print(
        "stack % = the CPU the stack's containers used (the engine's counters); machine % = "
        "the whole machine, engine and health-check exec overhead included"
    )


if __name__ == "__main__":
    main()
