"""CLI start-up: `edaenv --version`, `edaenv --help` and a command that runs (`edaenv env
--json` in a project made by `edaenv init`) against bare `python -c pass`.

Runs the baseline in the same run, interleaved, and prints medians and ratios. Goal: `--help`
and `--version` within 60 ms of bare Python.

Measures edaenv as users get it: installed from this checkout as a wheel (not editable: an
editable install adds an import hook of its own) into a venv of its own, made on the first run
(PyPI or a pip cache needed) and refreshed with the checkout's code on every run.

    python bench/cli_startup.py [--rounds 15] [--venv DIR] [--python PATH]

--python measures an interpreter where edaenv is installed already (e.g. .venv/bin/python).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_MS = 60


def commands(python: str) -> dict[str, list[str]]:
    return {
        "python -c pass": [python, "-c", "pass"],
        "edaenv --version": [python, "-m", "edaenv", "--version"],
        "edaenv --help": [python, "-m", "edaenv", "--help"],
        "edaenv env --json": [python, "-m", "edaenv", "env", "--json"],
    }


def installed(venv: Path) -> str:
    """The venv's python, with this checkout installed as a wheel."""
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, str(REPO)], check=True)
    else:  # the dependencies are there: only the checkout's code again
        subprocess.run([*pip, "--no-deps", "--force-reinstall", str(REPO)], check=True)
    return str(python)


def editable(python: str) -> bool:
    probe = (
        "import importlib.metadata as m\n"
        "print(m.distribution('edaenv').read_text('direct_url.json') or '{}')"
    )
    said = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return bool(json.loads(said.stdout).get("dir_info", {}).get("editable"))


def measure(python: str, rounds: int, project: str) -> dict[str, float]:
    todo = commands(python)
    samples: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(rounds):
        for name, command in todo.items():  # interleaved: noise hits all alike
            start = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True, cwd=project)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--venv", type=Path, default=Path(tempfile.gettempdir()) / "edaenv-bench-cli-startup"
    )
    parser.add_argument("--python", help="an interpreter with edaenv installed already")
    args = parser.parse_args()
    python = args.python or installed(args.venv)
    how = "editable install" if editable(python) else "installed as a wheel"
    print(f"{python} ({how})")
    with tempfile.TemporaryDirectory() as project:
        subprocess.run(["git", "init", "-q", project], check=True)
        init = [python, "-m", "edaenv", "init", "--defaults", project]
        subprocess.run(init, check=True, capture_output=True)
        medians = measure(python, args.rounds, project)
    base = medians["python -c pass"]
    print(f"{'command':<20} {'median ms':>10} {'ratio':>7} {'over bare ms':>13}")
    for name, value in medians.items():
        print(
            f"{name:<20} {value * 1000:>10.1f} {value / base:>7.2f} {(value - base) * 1000:>13.1f}"
        )
    for name in ("edaenv --help", "edaenv --version"):
        gap = (medians[name] - base) * 1000
        print(
            f"goal: {name.split()[1]} within {GOAL_MS} ms of bare python: "
            f"{'met' if gap <= GOAL_MS else 'NOT met'} ({gap:.0f} ms)"
        )


if __name__ == "__main__":
    main()
