"""CLI start-up: `edaenv --version`, `edaenv --help` and a command that runs (`edaenv env
--json` in a project made by `edaenv init`) against bare `python -c pass`.

Runs the baseline in the same run, interleaved, and prints medians and ratios. Goal: `--help`
within 100 ms of bare Python.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "edaenv --version": [sys.executable, "-m", "edaenv", "--version"],
    "edaenv --help": [sys.executable, "-m", "edaenv", "--help"],
    "edaenv env --json": [sys.executable, "-m", "edaenv", "env", "--json"],
}


def measure(rounds: int, project: str) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, command in COMMANDS.items():  # interleaved: noise hits all alike
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True, cwd=project)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as project:
        subprocess.run(["git", "init", "-q", project], check=True)
        init = [sys.executable, "-m", "edaenv", "init", "--defaults", project]
        subprocess.run(init, check=True, capture_output=True)
        medians = measure(args.rounds, project)
    base = medians["python -c pass"]
    print(f"{'command':<20} {'median ms':>10} {'ratio':>7} {'over bare ms':>13}")
    for name, value in medians.items():
        print(
            f"{name:<20} {value * 1000:>10.1f} {value / base:>7.2f} {(value - base) * 1000:>13.1f}"
        )
    gap = (medians["edaenv --help"] - base) * 1000
    print(
        f"goal: --help within 100 ms of bare python: {'met' if gap <= 100 else 'NOT met'} "
        f"({gap:.0f} ms)"
    )


if __name__ == "__main__":
    main()
