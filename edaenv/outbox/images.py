"""Wheels for the relay and consumer images, prepared on the host: the image build then installs
with `pip install --no-index`, so it needs no network (containers here cannot reach PyPI).

`prepare_app_wheels(config)` writes `<scaffold>/.generated/wheels/`:
- `edaenv-<version>-py3-none-any.whl`, packed from the edaenv the host runs (editable or not);
- wheels of the services' runtime dependencies, at the versions installed on the host, for the
  Python version and CPU of the `python` image (asked from the image itself when it is present;
  otherwise the host's, which is what the default python image has on an x86-64/arm64 host);
- `requirements.txt` naming them. A stamp skips all of it when nothing changed, so a second
  `edaenv up` works without any network at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from edaenv import __version__
from edaenv.config import Config
from edaenv.errors import EngineError

# What the relay and the sample consumer import (edaenv itself is installed with --no-deps).
RUNTIME = (
    "psycopg",
    "psycopg-binary",
    "prometheus-client",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "pyyaml",
    "jsonschema",  # the relay checks each row's payload against its contract
    "confluent-kafka",
    "pika",
    "nats-py",
)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # reproducible wheel bytes: docker's layer cache hits


def prepare_app_wheels(config: Config) -> Path:
    """Fill .generated/wheels/ for the relay and consumer builds; returns the directory."""
    dest = config.generated_dir / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    requirements = [f"{name}=={_installed(name)}" for name in RUNTIME]
    python, machine = _target(config.image("python"))
    stamp = json.dumps(
        {"requirements": requirements, "python": python, "machine": machine}, sort_keys=True
    )
    stamp_file = dest / ".stamp"
    if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
        for old in dest.glob("*.whl"):
            old.unlink()
        _fetch(requirements, dest, python, machine)
        (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")
        stamp_file.write_text(stamp)
    for old in dest.glob("edaenv-*.whl"):
        old.unlink()
    build_edaenv_wheel(dest)
    return dest


def _installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise EngineError(
            f"{name} is not installed beside edaenv: the relay and consumer images need it",
            hint=f"pip install {name} (it is a dependency of "
            "edaenv; reinstalling edaenv brings it back)",
        ) from None


def _target(image: str) -> tuple[str, str]:
    """(python version "3.12", machine "x86_64") of the image, or of the host if unknown."""
    host = (f"{sys.version_info.major}.{sys.version_info.minor}", platform.machine())
    probe = (
        "import sys, platform; "
        "print(f'{sys.version_info.major}.{sys.version_info.minor} {platform.machine()}')"
    )
    try:
        import docker

        client = docker.from_env()
        client.images.get(image)
        output = client.containers.run(
            image, ["python3", "-c", probe], entrypoint=[], remove=True, network_disabled=True
        )
        version, machine = output.decode().split()
        return version, machine
    except Exception:  # no engine, or the image is not pulled yet: the host is the best guess
        return host


def _fetch(requirements: list[str], dest: Path, python: str, machine: str) -> None:
    host = (f"{sys.version_info.major}.{sys.version_info.minor}", platform.machine())
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    if (python, machine) == host:
        command = [*pip, "wheel", "--quiet", "--wheel-dir", str(dest), *requirements]
    else:
        arch = {"arm64": "aarch64"}.get(machine, machine)
        platforms = [f"manylinux_2_{n}_{arch}" for n in (17, 28, 34)] + [f"manylinux2014_{arch}"]
        command = [
            *pip,
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            "--python-version",
            python,
            "--implementation",
            "cp",
            *[arg for p in platforms for arg in ("--platform", p)],
            *requirements,
        ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError(
            f"could not gather the wheels of the relay and consumer images for Python {python} "
            f"on {machine}: {result.stderr.strip().splitlines()[-1:] or result.returncode}",
            where=" ".join(command[3:6]),
            hint="the host's pip needs PyPI (or a mirror: PIP_INDEX_URL) once; later runs reuse "
            f"{dest}",
        )


def build_edaenv_wheel(dest: Path) -> Path:
    """Pack the running edaenv package as a pure-Python wheel (no build backend, no network)."""
    package = Path(__file__).resolve().parent.parent
    name = f"edaenv-{__version__}"
    wheel = dest / f"{name}-py3-none-any.whl"
    files: list[tuple[str, bytes]] = []
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((f"edaenv/{path.relative_to(package).as_posix()}", path.read_bytes()))
    info = f"{name}.dist-info"
    files.append(
        (
            f"{info}/METADATA",
            f"Metadata-Version: 2.1\nName: edaenv\nVersion: {__version__}\n".encode(),
        )
    )
    files.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: edaenv\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    record = [f"{arc},sha256={_digest(data)},{len(data)}" for arc, data in files]
    files.append((f"{info}/RECORD", ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()))
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for arc, data in files:
            archive.writestr(zipfile.ZipInfo(arc, date_time=FIXED_TIME), data)
    return wheel


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
