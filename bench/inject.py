"""`edaenv inject partition` + `heal` against raw `docker network disconnect/connect --alias`.

One small compose project (two containers on the stack network, named by role) and, in the
same run, interleaved rounds of:
  raw docker     `docker network disconnect` + `docker network connect --alias ROLE ...`
  edaenv in-proc the faults API (Docker SDK, fault record written and read back)
  edaenv CLI     `edaenv inject partition ROLE` + `edaenv inject heal ROLE` (two processes)
Each round checks that the other container resolves the role by name again afterwards. Prints
medians and ratios to the raw docker baseline.

    python bench/inject.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

COMPOSE = """
services:
  broker:
    image: {image}
    command: ["sleep", "infinity"]
  consumer:
    image: {image}
    command: ["sleep", "infinity"]
"""


def run(*command: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from tests.images.standins import ensure_images

    image = ensure_images(["python"])["python"]
    project = f"bench-inject-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        edaenv = [sys.executable, "-m", "edaenv"]
        run(*edaenv, "init", "--defaults", "--name", project, cwd=root)
        (root / "bench-compose.yaml").write_text(COMPOSE.format(image=image))
        compose = ["docker", "compose", "-p", project, "-f", str(root / "bench-compose.yaml")]
        run(*compose, "up", "-d", "--wait")
        try:
            medians = measure(root, project, edaenv, args.rounds)
        finally:
            run(*edaenv, "inject", "heal", "--all", cwd=root)
            run(*compose, "down", "-v", "--timeout", "1")
    base = medians["raw docker"]
    print(f"{'partition + heal':<16} {'median ms':>10} {'ratio':>7}")
    for name, value in medians.items():
        print(f"{name:<16} {value * 1000:>10.1f} {value / base:>7.2f}")


def measure(root: Path, project: str, edaenv: list[str], rounds: int) -> dict[str, float]:
    from edaenv.config import load_config
    from edaenv.faults import containers, service
    from edaenv.faults.state import FaultStore

    config = load_config(root / "edaenv.yaml")
    store = FaultStore(config.generated_dir)
    consumer = run(
        "docker",
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        "label=com.docker.compose.service=consumer",
    ).strip()
    broker = run(
        "docker",
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        "label=com.docker.compose.service=broker",
    ).strip()
    network = next(
        iter(json.loads(run("docker", "inspect", consumer))[0]["NetworkSettings"]["Networks"])
    )

    def raw() -> None:
        run("docker", "network", "disconnect", network, consumer)
        run("docker", "network", "connect", "--alias", "consumer", network, consumer)

    def in_process() -> None:
        fault = containers.inject(config, store, "partition", "consumer")
        service.heal(config, [fault["id"]])

    def cli() -> None:
        run(*edaenv, "inject", "partition", "consumer", cwd=root)
        run(*edaenv, "inject", "heal", "consumer", cwd=root)

    ways = {"raw docker": raw, "edaenv in-proc": in_process, "edaenv CLI": cli}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():  # interleaved: noise hits all alike
            started = time.perf_counter()
            way()
            samples[name].append(time.perf_counter() - started)
            run("docker", "exec", broker, "getent", "hosts", "consumer")  # resolvable again
    return {name: statistics.median(values) for name, values in samples.items()}


if __name__ == "__main__":
    main()
