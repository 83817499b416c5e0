"""The default images file as it ships: compose v2 reads it as the compose file that Renovate and
Dependabot take it for, the wheel carries it, and the installed copy is what edaenv renders from
(a changed pin re-renders; a broken file is a located error, no traceback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

FILE = REPO / "compose-fragments" / "compose.images.yaml"
INSTALLED = "edaenv/_data/compose-fragments/compose.images.yaml"
# `up` renders through this stamp: prints whether it rendered, and the compose file's postgres.
RENDER_IF_CHANGED = """
from edaenv.config import load_config
from edaenv.engine.rendering import render_if_changed
config = load_config()
print(render_if_changed(config), config.compose_file.read_text().count("image: mirror.example"))
"""


def test_compose_v2_reads_the_images_file_as_a_compose_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    listed = yaml.safe_load(FILE.read_text())["services"]
    assert {role: spec["image"] for role, spec in services.items()} == {
        role: spec["image"] for role, spec in listed.items()
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built wheel, unpacked as pip lays it out in site-packages."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=out,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("edaenv-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(INSTALLED) == FILE.read_bytes()
        archive.extractall(site)
    return site


def with_image(role: str, image: str) -> str:
    """The shipped images file with one role's image replaced (whatever its pin is today)."""
    text, count = re.subn(rf"(?m)^(  {role}:\n    image: ).*$", rf"\g<1>{image}", FILE.read_text())
    assert count == 1, role
    return text


def run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("EDAENV_CONFIG", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_installed_images_file_is_the_one_edaenv_renders_from(
    installed: Path, tmp_path: Path
) -> None:
    images = installed / INSTALLED
    project = tmp_path / "shop"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    where = run(installed, project, "-c", "import edaenv; print(edaenv.__file__)")
    assert where.stdout.strip() == str(installed / "edaenv" / "__init__.py")  # not the checkout

    images.write_text(with_image("postgres", "mirror.example/postgres:18.1"))
    init = run(installed, project, "-m", "edaenv", "init", "--defaults", "--broker", "nats")
    assert init.returncode == 0, init.stderr
    compose = (project / "eda" / "compose.yaml").read_text()
    assert "    image: mirror.example/postgres:18.1\n" in compose
    assert "- postgres-data:/var/lib/postgresql\n" in compose

    # What `up` does: render once, then nothing while no input changed ...
    assert run(installed, project, "-c", RENDER_IF_CHANGED).stdout == "True 1\n"
    assert run(installed, project, "-c", RENDER_IF_CHANGED).stdout == "False 1\n"
    # ... until a pin in the images file changes (an upgrade of edaenv, a Renovate PR).
    images.write_text(with_image("broker-nats", "mirror.example/nats:2.12"))
    assert run(installed, project, "-c", RENDER_IF_CHANGED).stdout == "True 1\n"
    assert "    image: mirror.example/nats:2.12\n" in (project / "eda" / "compose.yaml").read_text()
    check = run(installed, project, "-m", "edaenv", "render", "--check", "--json")
    assert json.loads(check.stdout) == {"up_to_date": True, "stale": []}

    images.write_text(with_image("grafana", "grafana/grafana:13 latest"))
    broken = run(installed, project, "-m", "edaenv", "render")
    assert broken.returncode == 2
    assert broken.stdout == ""
    assert "Traceback" not in broken.stderr
    lines = [line.strip() for line in broken.stderr.splitlines()]
    assert lines[0].startswith(f"error: {images}:20: grafana: 'grafana/grafana:13 latest' is not")
    assert lines[-1] == (
        "hint: this file ships with edaenv: reinstall edaenv (in a checkout: fix the file)"
    )
