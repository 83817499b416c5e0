"""Wheels for the relay and consumer images, prepared on the host: the image build then installs
with `pip install --no-index`, so it needs no network (the engine may have none, and a second
`edaenv up` must work offline).

`prepare_app_wheels(config)` writes `<scaffold>/.generated/wheels/`:
- `edaenv-<version>-py3-none-any.whl`, packed from the edaenv the host runs (editable or not);
- wheels of the services' runtime dependencies for the Python version and CPU of the `python`
  image (asked from the image itself), from the first source that works:
  1. repacked from the distributions installed beside edaenv, when the image runs the host's
     Python version on the host's CPU and C library: the installed files are the wheels'
     content. No installer and no network, so it is the same under pip, pipx and
     `uv tool install` (whose environments have no pip);
  2. otherwise downloaded for the image's Python and CPU by a pip: the one beside edaenv (a venv,
     or pipx's shared pip), else the pip wheel CPython bundles for ensurepip (run from the
     wheel, nothing installed), else `uv tool run pip` when uv is on PATH;
- `requirements.txt` naming them.
A stamp skips all of it when nothing changed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata, resources
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
# Files an installer adds to a dist-info directory; they are not part of the wheel.
INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json"}
# A Requires-Dist line (PEP 508): name, [extras], version, ; marker.
REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?[^;]*(?:;(?P<marker>.*))?"
)
EXTRA = re.compile(r"""\bextra\s*==\s*['"]([^'"]+)['"]""")


@dataclass(frozen=True)
class Target:
    """The Python of the image: version "3.12", machine "x86_64"."""

    python: str
    machine: str


def prepare_app_wheels(config: Config) -> Path:
    """Fill .generated/wheels/ for the relay and consumer builds; returns the directory."""
    dest = config.generated_dir / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    requirements = [f"{name}=={_installed(name)}" for name in RUNTIME]
    target = _target(config.image("python"))
    closure = _closure(RUNTIME) if _repackable(target) else None
    source = "installed" if closure is not None else "downloaded"
    pinned = [f"{dist.name}=={dist.version}" for dist in closure or []]
    stamp = json.dumps(
        {
            "requirements": requirements,
            "closure": sorted(pinned),
            "python": target.python,
            "machine": target.machine,
            "source": source,
        },
        sort_keys=True,
    )
    stamp_file = dest / ".stamp"
    if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
        stamp_file.unlink(missing_ok=True)  # a run stopped halfway must not pass for done
        for old in dest.glob("*.whl"):
            old.unlink()
        if closure is not None:
            for dist in closure:
                repack(dist, dest)
        else:
            _download(requirements, dest, target)
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
            hint=f"reinstall edaenv (it depends on {name}), e.g. `pip install --force-reinstall "
            "edaenv`, `pipx reinstall edaenv` or `uv tool install --reinstall edaenv`",
        ) from None


def host() -> Target:
    return Target(
        f"{sys.version_info.major}.{sys.version_info.minor}", _machine(platform.machine())
    )


def _machine(name: str) -> str:
    # Docker Desktop on an Apple or Windows host runs Linux images on the same CPU.
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(name.lower(), name)


def _target(image: str) -> Target:
    """The image's Python, asked from the image itself: pulled first when missing (the build
    pulls it anyway). Without an engine or registry: the version its tag names
    (python:3.12-slim), else the host's."""
    probe = (
        "import sys, platform; "
        "print(f'{sys.version_info.major}.{sys.version_info.minor} {platform.machine()}')"
    )
    try:
        import docker.errors

        from edaenv.engine.status import docker_client

        client = docker_client()
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            client.images.pull(image)
        output = client.containers.run(
            image, ["python3", "-c", probe], entrypoint=[], remove=True, network_disabled=True
        )
        version, machine = output.decode().split()
        return Target(version, _machine(machine))
    except Exception:  # no engine, no registry, no python3 in the image: the best guess
        tagged = re.search(r":(3\.\d+)", image.rsplit("/", 1)[-1])
        return Target(tagged.group(1), host().machine) if tagged else host()


# --- 1. repacked from what is installed ----------------------------------------------------


def _repackable(target: Target) -> bool:
    """Installed files are the image's wheels only for the same Python, CPU and C library
    (official python images are Debian: glibc)."""
    return (
        sys.platform == "linux"
        and platform.libc_ver()[0] == "glibc"
        and target == host()
        and sys.implementation.name == "cpython"
    )


def _closure(names: tuple[str, ...]) -> list[metadata.Distribution] | None:
    """The installed distributions `names` need, dependencies included; None when one of them
    cannot be repacked (no RECORD or WHEEL file: not installed from a wheel)."""
    found: dict[str, metadata.Distribution] = {}
    extras_seen: set[tuple[str, str]] = set()
    pending: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in names]
    while pending:
        name, extras = pending.pop()
        key = _normal(name)
        new_extras = {extra for extra in extras if (key, extra) not in extras_seen}
        if key in found and not new_extras:
            continue
        extras_seen.update((key, extra) for extra in extras)
        dist = found.get(key) or metadata.distribution(name)
        if dist.files is None or dist.read_text("WHEEL") is None:
            return None
        found[key] = dist
        for requirement in dist.requires or []:
            parsed = REQUIREMENT.match(requirement)
            if parsed is None:
                continue
            wanted = EXTRA.findall(parsed["marker"] or "")
            if wanted and not set(wanted) & extras:
                continue  # an extra nobody asked for
            try:
                metadata.distribution(parsed["name"])
            except metadata.PackageNotFoundError:
                # Not installed, so its marker is false here, and the image runs the same
                # Python on the same platform.
                if not parsed["marker"]:
                    _installed(parsed["name"])
                continue
            asked = frozenset(e.strip() for e in (parsed["extras"] or "").split(",") if e.strip())
            pending.append((parsed["name"], asked))
    return sorted(found.values(), key=lambda d: _normal(d.name))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists. Scripts and data
    installed outside site-packages are left out: the services import, they run no scripts."""
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    parts = [sorted({tag.split("-")[i] for tag in tags}) for i in range(3)]
    name = re.sub(r"[-_.]+", "_", dist.name)
    wheel = dest / f"{name}-{dist.version}-{'-'.join('.'.join(p) for p in parts)}.whl"
    files: list[tuple[str, bytes]] = []
    info: str | None = None
    for entry in sorted(dist.files or [], key=str):
        arc = entry.as_posix()
        if arc.startswith("../") or "__pycache__" in entry.parts or arc.endswith(".pyc"):
            continue
        if entry.parts[0].endswith(".dist-info"):
            info = entry.parts[0]
            if len(entry.parts) == 2 and entry.name in INSTALLER_FILES:
                continue
        path = Path(str(dist.locate_file(entry)))
        if path.is_file():
            files.append((arc, path.read_bytes()))
    if info is None:
        raise EngineError(
            f"{dist.name} {dist.version} lists no .dist-info directory in its RECORD",
            hint=f"reinstall it beside edaenv ({dist.name})",
        )
    _write_wheel(wheel, files, info)
    return wheel


# --- 2. downloaded by whichever pip there is -----------------------------------------------


def installers(
    python: str = sys.executable, pip_wheels: list[Path] | None = None, path: str | None = None
) -> list[list[str]]:
    """Commands that run a pip for `python`, best first: the pip installed beside it (a venv,
    pipx's shared pip), the pip wheel CPython bundles for ensurepip (run from the wheel, nothing
    installed: uv's and pipx's environments have no pip), then uv running pip."""
    found: list[list[str]] = []
    probe = subprocess.run([python, "-c", "import pip"], capture_output=True)
    if probe.returncode == 0:
        found.append([python, "-m", "pip"])
    for place in _pip_wheel_dirs() if pip_wheels is None else pip_wheels:
        wheels = sorted(place.glob("pip-*-py3-none-any.whl")) if place.is_dir() else []
        if wheels:
            found.append([python, f"{wheels[-1]}/pip"])
            break
    uv = shutil.which("uv", path=path)
    if uv is not None:
        found.append([uv, "tool", "run", "--python", python, "--from", "pip", "pip"])
    return found


def _pip_wheel_dirs() -> list[Path]:
    """Where CPython keeps its own pip wheel for ensurepip (Debian: /usr/share/python-wheels)."""
    places = [Path("/usr/share/python-wheels")]
    with contextlib.suppress(ModuleNotFoundError):  # some distributions leave ensurepip out
        places.insert(0, Path(str(resources.files("ensurepip") / "_bundled")))
    return places


def _download(requirements: list[str], dest: Path, target: Target) -> None:
    candidates = installers()
    if not candidates:
        raise EngineError(
            "no pip to fetch the wheels of the relay and consumer images for Python "
            f"{target.python} on {target.machine}: no pip module beside {sys.executable}, no "
            "pip wheel bundled with it (ensurepip), no `uv` on PATH",
            hint="install uv or pip, or use a `python` image with this machine's Python "
            f"{host().python} (images: python: in edaenv.yaml): edaenv then needs no installer",
        )
    pip = [*candidates[0], "--disable-pip-version-check"]
    if target == host():
        command = [*pip, "wheel", "--quiet", "--wheel-dir", str(dest), *requirements]
    else:
        platforms = [f"manylinux_2_{n}_{target.machine}" for n in (17, 28, 34)]
        command = [
            *pip,
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            "--python-version",
            target.python,
            "--implementation",
            "cp",
            *[
                arg
                for p in [*platforms, f"manylinux2014_{target.machine}"]
                for arg in ("--platform", p)
            ],
            *requirements,
        ]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        said = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise EngineError(
            f"could not gather the wheels of the relay and consumer images for Python "
            f"{target.python} on {target.machine}: {said[0]}",
            where=" ".join(command[: len(pip) + 1]),
            hint="this needs the package index (PyPI, or PIP_INDEX_URL) once; later runs reuse "
            f"{dest}",
        )


# --- edaenv itself ---------------------------------------------------------------------------


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
    _write_wheel(wheel, files, info)
    return wheel


def _write_wheel(wheel: Path, files: list[tuple[str, bytes]], info: str) -> None:
    record = [f"{arc},sha256={_digest(data)},{len(data)}" for arc, data in files]
    files = [*files, (f"{info}/RECORD", ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode())]
    partial = wheel.with_name(wheel.name + ".part")
    with zipfile.ZipFile(partial, "w") as archive:
        for arc, data in files:
            entry = zipfile.ZipInfo(arc, date_time=FIXED_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, data, compresslevel=1)
    partial.replace(wheel)


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
