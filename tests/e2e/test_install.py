"""edaenv as users install it: the built wheel with pip into a fresh venv, `uv tool install` and
`pipx install` (uv and pipx themselves from PyPI, into a venv of the test). Each installed
edaenv builds the relay and consumer images through its own code (no repository, no host pip
needed); the pip one also brings a stack up.

The interpreters differ on purpose, against the stand-in python image's Python 3.11: the pip
venv runs 3.12 (its pip downloads the image's wheels), uv 3.11 (no pip there: the installed
distributions are repacked), pipx 3.13 (no pip either: CPython's bundled pip wheel downloads).
Everything an installer writes (HOME, caches, tool directories) stays under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edaenv import __version__
from edaenv.engine import images
from tests.e2e.conftest import REPO, MakeStack, Stack

pytestmark = pytest.mark.engine

PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
COMPONENTS = ("postgres", "outbox", "consumer")
# Imports the relay and the sample consumer need, checked inside the built images.
IMPORTS = "import edaenv, psycopg, confluent_kafka, nats, pika, jsonschema, opentelemetry.sdk"
BUILD = """
import sys
from pathlib import Path
from edaenv.config import load_config
from edaenv.engine import compose
from edaenv.engine.images import prepare_app_wheels
config = load_config(Path(sys.argv[1]))
prepare_app_wheels(config)
compose.run(compose.compose(config, "build", "relay", "consumer"), timeout=900)
"""


def python(version: str) -> str:
    """A CPython of this minor version: pyenv's, else one on PATH."""
    found = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if found:
        return str(found[-1])
    on_path = subprocess.run(["which", f"python{version}"], capture_output=True, text=True)
    assert on_path.returncode == 0, f"no Python {version} on this machine for the install tests"
    return on_path.stdout.strip()


def run(*command: str | Path, env: dict[str, str], cwd: Path, timeout: float = 600) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distributable wheel, built from the repository as a release would be."""
    out = tmp_path_factory.mktemp("dist")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-q",
        REPO,
        "-w",
        out,
        env=dict(os.environ),
        cwd=out,
    )
    (built,) = out.glob("edaenv-*.whl")
    return built


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding uv and pipx, as users get them from PyPI."""
    venv = tmp_path_factory.mktemp("tools") / "venv"
    run(python("3.11"), "-m", "venv", venv, env=dict(os.environ), cwd=venv.parent)
    run(
        venv / "bin/python",
        "-m",
        "pip",
        "install",
        "-q",
        "uv",
        "pipx",
        env=dict(os.environ),
        cwd=venv.parent,
    )
    return venv / "bin"


@pytest.fixture
def user(tmp_path: Path) -> dict[str, str]:
    """A user's environment whose home, caches and tool directories are in tmp_path."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_BIN_HOME": str(bin_dir),
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(bin_dir),
        "UV_TOOL_DIR": str(tmp_path / "uv-tools"),
        "UV_TOOL_BIN_DIR": str(bin_dir),
        "UV_PYTHON_DOWNLOADS": "never",
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",  # no venv of the test on it
        "CI": "true",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    for inherited in ("VIRTUAL_ENV", "PYTHONPATH", "EDAENV_CONFIG", "DOCKER_CONFIG"):
        env.pop(inherited, None)
    return env


@pytest.fixture
def built_images() -> Iterator[list[str]]:
    """Image names the test built; removed afterwards (only these)."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["docker", "rmi", "--force", name], capture_output=True, timeout=120)


def tool_python(edaenv: Path) -> Path:
    """The interpreter of the environment an installed console script belongs to."""
    return edaenv.resolve().parent / "python"


def build_app_images(
    edaenv: Path, stack: Stack, env: dict[str, str], built: list[str]
) -> tuple[str, str]:
    """The relay and consumer images, built by the installed edaenv's own code path."""
    run(edaenv, "render", env=env, cwd=stack.root)
    relay, consumer = f"{stack.project}-relay:dev", f"{stack.project}-consumer:dev"
    built += [relay, consumer]
    run(tool_python(edaenv), "-c", BUILD, stack.root / "edaenv.yaml", env=env, cwd=stack.root)
    return relay, consumer


def assert_runs_edaenv(image: str) -> None:
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            image,
            "-c",
            f"{IMPORTS}; print(edaenv.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == __version__


def wheels_for(stack: Stack, name: str) -> list[str]:
    return sorted(p.name for p in (stack.scaffold / ".generated/wheels").glob(f"{name}-*.whl"))


def test_pip_venv_from_the_built_wheel_builds_and_brings_a_stack_up(
    wheel: Path,
    user: dict[str, str],
    tmp_path: Path,
    make_stack: MakeStack,
    built_images: list[str],
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "edaenv/py.typed" in names
    assert f"edaenv-{__version__}.dist-info/licenses/LICENSE" in names
    venv = tmp_path / "venv"
    run(python("3.12"), "-m", "venv", venv, env=user, cwd=tmp_path)
    run(venv / "bin/python", "-m", "pip", "install", "-q", wheel, env=user, cwd=tmp_path)
    edaenv = venv / "bin/edaenv"
    located = run(
        venv / "bin/python", "-c", "import edaenv; print(edaenv.__file__)", env=user, cwd=tmp_path
    )
    assert located.startswith(str(venv)), located  # the wheel's copy, not the repository

    # The templates and compose fragments came with the wheel.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run("git", "init", "-q", fresh, env=user, cwd=tmp_path)
    run(edaenv, "init", "--defaults", env=user, cwd=fresh)
    run(edaenv, "render", "--check", env=user, cwd=fresh)
    # The default images come from the wheel's compose-fragments/compose.images.yaml.
    assert "image: postgres:18\n" in (fresh / "eda" / "compose.yaml").read_text()

    stack = make_stack("nats", COMPONENTS)
    up = subprocess.run(
        [edaenv, "up"], cwd=stack.root, env=user, capture_output=True, text=True, timeout=600
    )
    built_images += [f"{stack.project}-relay:dev", f"{stack.project}-consumer:dev"]
    assert up.returncode == 0, up.stderr
    status = json.loads(run(edaenv, "status", "--json", env=user, cwd=stack.root))
    assert status["healthy"] is True
    assert {s["service"] for s in status["services"]} == {"broker", "postgres", "relay", "consumer"}
    # The venv's pip fetched the image's wheels (Python 3.11), not the host's 3.12 ones.
    (kafka_wheel,) = wheels_for(stack, "confluent_kafka")
    assert "-cp311-" in kafka_wheel
    assert_runs_edaenv(f"{stack.project}-relay:dev")
    run(edaenv, "down", "--volumes", env=user, cwd=stack.root)


def test_uv_tool_install_builds_the_images_without_pip(
    wheel: Path, tools: Path, user: dict[str, str], make_stack: MakeStack, built_images: list[str]
) -> None:
    """The reproduction: under `uv tool install` the build failed with "No module named pip"."""
    run(
        tools / "uv",
        "tool",
        "install",
        "--python",
        python("3.11"),
        wheel,
        env=user,
        cwd=Path(user["HOME"]).parent,
    )
    edaenv = Path(user["UV_TOOL_BIN_DIR"]) / "edaenv"
    no_pip = subprocess.run([tool_python(edaenv), "-c", "import pip"], capture_output=True)
    assert no_pip.returncode != 0  # what made the old code fail
    stack = make_stack("nats", COMPONENTS)
    for image in build_app_images(edaenv, stack, user, built_images):
        assert_runs_edaenv(image)
    (kafka_wheel,) = wheels_for(stack, "confluent_kafka")
    assert "-cp311-" in kafka_wheel


def test_pipx_install_builds_the_images_for_another_python(
    wheel: Path, tools: Path, user: dict[str, str], make_stack: MakeStack, built_images: list[str]
) -> None:
    run(
        tools / "pipx",
        "install",
        "--python",
        python("3.13"),
        wheel,
        env={**user, "PATH": f"{tools}:{user['PATH']}"},
        cwd=Path(user["HOME"]).parent,
    )
    edaenv = Path(user["PIPX_BIN_DIR"]) / "edaenv"
    stack = make_stack("nats", COMPONENTS)
    for image in build_app_images(edaenv, stack, user, built_images):
        assert_runs_edaenv(image)
    # Host Python 3.13, image Python 3.11: the wheels are the image's.
    (kafka_wheel,) = wheels_for(stack, "confluent_kafka")
    assert "-cp311-" in kafka_wheel


def test_without_any_pip_uv_runs_one(tools: Path, tmp_path: Path) -> None:
    """The last resort: an interpreter with no pip and no bundled pip wheel, and uv on PATH."""
    bare = tmp_path / "bare"
    subprocess.run([python("3.11"), "-m", "venv", "--without-pip", bare], check=True)
    found = images.installers(str(bare / "bin/python"), pip_wheels=[], path=str(tools))
    assert found == [
        [
            str(tools / "uv"),
            "tool",
            "run",
            "--python",
            str(bare / "bin/python"),
            "--from",
            "pip",
            "pip",
        ]
    ]
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "HOME": str(tmp_path)}
    run(
        *found[0],
        "download",
        "--no-deps",
        "-q",
        "-d",
        tmp_path / "got",
        "pika==1.3.2",
        env=env,
        cwd=tmp_path,
    )
    assert [p.name for p in (tmp_path / "got").iterdir()] == ["pika-1.3.2-py3-none-any.whl"]
