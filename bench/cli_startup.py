"""CLI start-up: `edaenv --version` and `edaenv --help` against bare `python -c pass`.

Runs the baseline in the same run, interleaved, and prints medians and ratios. Goal: `--help`
within 100 ms of bare Python.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "edaenv --version": [sys.executable, "-m", "edaenv", "--version"],
    "edaenv --help": [sys.executable, "-m", "edaenv", "--help"],
}


def measure(rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, command in COMMANDS.items():  # interleaved: noise hits all alike
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    medians = measure(args.rounds)
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
