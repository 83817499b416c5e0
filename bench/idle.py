"""Idle cost: the CPU an idle, healthy stack takes, per service, over a window after `up`, from
the engine's own per-container counters (what `docker stats` shows; a health check's processes
run in the container's cgroup and count there). In the same run, a baseline with no stack shows
the noise: the whole machine's CPU and the engine's (dockerd, containerd and the shims, whose
reaped children include runc, so every health-check exec shows there too).

    .venv/bin/python bench/idle.py [--brokers kafka,rabbitmq,nats] [--seconds 60]
                                   [--old-checks] [--rare-checks]

Goal: the whole stack (every component but Grafana) <= 3% of one core. Every check, however
cheap, costs a `runc exec` in the container's cgroup each time (~14 ms of CPU here): `up` makes
checks rare once a service is healthy (engine/compose.py: `start_interval` on Docker 25+, the
sleeping gate before). Extra arms, each with a compose override: --old-checks, the relay's and
consumer's former health checks (`python3 -c` every second); --rare-checks, every check every
30 s (what `start_interval` gives on Docker 25+). Stand-in images by default
(EDAENV_TEST_IMAGES=official keeps the official ones); redpanda runs on the Kafka stand-in.
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
ENGINE = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
PROBE = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{}/healthz', timeout=2)"
RARE_INTERVAL = "30s"
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


def engine_busy() -> float:
    """CPU seconds of the engine's long-lived processes and their reaped children (runc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if comm in ENGINE or comm.startswith("containerd-shim"):
            # utime, stime, cutime, cstime: fields 14-17, counted after the ")".
            total += sum(int(v) for v in text[text.rindex(")") + 2 :].split()[11:15])
    return total / os.sysconf("SC_CLK_TCK")


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


class Window:
    """% of one core over a window: the stack's services, the machine, the engine."""

    def __init__(self, client: docker.DockerClient, project: str | None, seconds: float):
        before_host, before_engine = host_busy(), engine_busy()
        before = container_cpu(client, project) if project else {}
        started = time.monotonic()
        time.sleep(seconds)
        after = container_cpu(client, project) if project else {}
        elapsed = time.monotonic() - started
        self.host = (host_busy() - before_host) / elapsed * 100
        self.engine = (engine_busy() - before_engine) / elapsed * 100
        self.services = {n: (after[n] - before.get(n, 0.0)) / elapsed * 100 for n in after}
        self.stack = sum(self.services.values())


def rare_checks(services: list[str]) -> str:
    return "services:\n" + "".join(
        f"  {name}:\n    healthcheck:\n      interval: {RARE_INTERVAL}\n" for name in services
    )


def measure(root: Path, client: docker.DockerClient, seconds: float, arm: str) -> Window:
    from edaenv.config import load_config

    config = load_config(root / "edaenv.yaml")
    project = config.project
    override = root / "eda" / "compose.override.yaml"
    if arm == "old checks":
        override.write_text(OLD_CHECKS)
    elif arm == "rare checks":
        override.write_text(rare_checks(list(config.services())))
    else:
        override.unlink(missing_ok=True)
    edaenv("up", "--timeout", "300", cwd=root)
    try:
        time.sleep(SETTLE_S)
        return Window(client, project, seconds)
    finally:
        edaenv("down", "--volumes", cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="kafka,rabbitmq,nats")
    parser.add_argument("--seconds", type=float, default=60, help="the measuring window")
    parser.add_argument(
        "--old-checks", action="store_true", help="also measure with the former python3 checks"
    )
    parser.add_argument(
        "--rare-checks", action="store_true", help=f"also measure with checks every {RARE_INTERVAL}"
    )
    args = parser.parse_args()
    images: dict[str, str] = {}
    if os.environ.get("EDAENV_TEST_IMAGES") != "official":
        from tests.images.standins import ensure_images

        images = ensure_images()
    client = docker.from_env()
    empty = Window(client, None, args.seconds)
    print(f"idle cost, % of one core over {args.seconds:g} s, {SETTLE_S} s after healthy")
    print(f"no stack (noise floor): machine {empty.host:.1f}, engine {empty.engine:.1f}")
    arms = ["old checks"] if args.old_checks else []
    arms.append("edaenv")
    arms += ["rare checks"] if args.rare_checks else []
    for broker in args.brokers.split(","):
        root = make_project(broker, images)
        for arm in arms:
            result = measure(root, client, args.seconds, arm)
            met = "met" if result.stack <= GOAL else "not met"
            print(
                f"{broker} ({arm}): stack {result.stack:.2f} (goal <= {GOAL:g}: {met}), "
                f"machine {result.host:.1f}, engine {result.engine:.1f}"
            )
            for name, value in sorted(result.services.items()):
                print(f"    {name:<12} {value:6.2f}")
    print(
        "stack = the stack's containers (engine counters, health checks included); machine = "
        "all of the machine (other work included); engine = dockerd, containerd and shims"
    )


if __name__ == "__main__":
    main()
