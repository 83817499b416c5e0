"""`init` and `render` are all or nothing: interrupted at every file write and every rename (by
an exception, a real SIGINT or SIGTERM), on a full disk or a read-only filesystem, they leave
the repository exactly as it was: every path, its content and its mode."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edaenv.errors import UsageError
from edaenv.stack.scaffold import InitPlan, init
from tests.conftest import REPO, run_edaenv

Snapshot = dict[str, tuple[object, ...]]


def snapshot(root: Path) -> Snapshot:
    """Every path under root: kind, mode, and content (or link target)."""
    entries: Snapshot = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            info = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                entries[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return entries


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--template=", str(path)], check=True)
    (path / "README.md").write_text("mine\n")
    return path


def initialised(path: Path, broker: str = "kafka") -> Path:
    """A repository after `init`, with a contract the user changed."""
    init(InitPlan(target=git_repo(path), project="shop", broker=broker, owner="team"))
    contract = path / "eda/events/OrderPlaced.v1.schema.json"
    contract.write_text(contract.read_text().replace('"orders"', '"orders-v2"'))
    contract.chmod(0o640)
    return path


# What each scenario runs, and what it starts from.
def init_fresh(root: Path) -> Callable[[], object]:
    git_repo(root / "shop")
    return lambda: init(InitPlan(target=root / "shop", project="shop", owner="team"))


def init_new_directory(root: Path) -> Callable[[], object]:
    # Directories init creates (shop/, shop/deep/) must go again too.
    return lambda: init(InitPlan(target=root / "shop/deep", project="shop", owner="team"))


def init_force(root: Path) -> Callable[[], object]:
    # Rewrites edaenv.yaml and compose.yaml, adds .generated/rabbitmq/: all must come back.
    initialised(root / "shop")
    plan = InitPlan(
        target=root / "shop", project="shop", broker="rabbitmq", owner="team", force=True
    )
    return lambda: init(plan)


def render_changed(root: Path) -> Callable[[], object]:
    project = initialised(root / "shop")
    config = project / "edaenv.yaml"
    config.write_text(config.read_text().replace("broker: kafka", "broker: rabbitmq"))
    return lambda: run_main("render", cwd=project)


def run_main(*argv: str, cwd: Path) -> int:
    """The CLI in this process, through its error boundary; returns the exit code."""
    from edaenv.cli.app import main

    before, old_argv = Path.cwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["edaenv", *argv]
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        os.chdir(before)
        sys.argv = old_argv
    return 0


SCENARIOS = {
    "init": init_fresh,
    "init-new-directory": init_new_directory,
    "init-force": init_force,
    "render": render_changed,
}


@contextlib.contextmanager
def fault_at(name: str, number: int | None, fault: str) -> Iterator[list[int]]:
    """Replace os.<name> so that its call number `number` fails with `fault` before it acts:
    an exception (KeyboardInterrupt, ENOSPC) or a real SIGINT/SIGTERM to this process.
    Yields the call counter."""
    real = getattr(os, name)
    calls = [0]

    def patched(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == number:
            if fault == "KeyboardInterrupt":
                raise KeyboardInterrupt
            if fault == "ENOSPC":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.kill(os.getpid(), getattr(signal, fault))
        return real(*args, **kwargs)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # SIGINT as in a fresh process (a test runner may have its own); SIGTERM, which ends a
    # process where edaenv does not catch it, ends the run instead of the test runner.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    setattr(os, name, patched)
    try:
        yield calls
    finally:
        setattr(os, name, real)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def outcome(run: Callable[[], object]) -> str:
    try:
        result = run()
    except KeyboardInterrupt:
        return "interrupted"
    except SystemExit as exc:
        return f"exit {exc.code}"
    except UsageError:
        return "exit 2"
    code = result if isinstance(result, int) else 0
    return "interrupted" if code == 130 else f"exit {code}"


EXPECTED = {"KeyboardInterrupt": "interrupted", "SIGINT": "interrupted", "SIGTERM": "exit 143"}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("operation", ["fsync", "replace"])
@pytest.mark.parametrize("fault", ["KeyboardInterrupt", "ENOSPC", "SIGINT", "SIGTERM"])
def test_a_fault_at_any_write_or_rename_changes_nothing(
    tmp_path: Path, scenario: str, operation: str, fault: str
) -> None:
    """fsync: once per file written (staged); replace: once per file moved into place."""
    prepare = SCENARIOS[scenario]
    clean = tmp_path / "clean"
    clean.mkdir()
    run = prepare(clean)
    with fault_at(operation, None, fault) as calls:  # counts the calls of a clean run
        assert outcome(run) == "exit 0"
    assert calls[0] >= 3, f"{scenario} made only {calls[0]} {operation} calls"
    for number in range(1, calls[0] + 1):
        root = tmp_path / f"{number}"
        root.mkdir()
        run = prepare(root)
        before = snapshot(root)
        with fault_at(operation, number, fault):
            result = outcome(run)
        assert result == EXPECTED.get(fault, "exit 2"), f"{operation} call {number}"
        assert snapshot(root) == before, f"{fault} at {operation} call {number} changed files"
        shutil.rmtree(root)


WRAPPER = """
import os, sys, time
from pathlib import Path
marker, number = Path(sys.argv[1]), int(sys.argv[2])
real, calls = os.replace, [0]

def replace(src, dst):
    # Counts only renames into the repository (copier works in the system's temp directory).
    if str(dst).startswith(str(marker.parent / "shop")):
        calls[0] += 1
        if calls[0] == number:
            marker.write_text("renaming")
            time.sleep(60)  # the test's signal lands here, mid-commit
    real(src, dst)

os.replace = replace
from edaenv.cli.app import main
sys.argv = ["edaenv", *sys.argv[3:]]
main()
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("number", [1, 8, 15])
def test_a_signal_from_outside_mid_commit_changes_nothing(
    tmp_path: Path, sig: int, code: int, number: int
) -> None:
    """A real `edaenv init` process, signalled while it moves its files into place."""
    repo = git_repo(tmp_path / "shop")
    before = snapshot(tmp_path)
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(marker), str(number), "init", "--defaults", str(repo)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), f"never reached rename {number}: {proc.communicate()[1]}"
    marker.unlink()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_files_staged_when_killed_cannot_be_committed(tmp_path: Path) -> None:
    """SIGKILL cannot be caught: the staging directory stays, but git ignores it (it carries a
    `.gitignore` of `*`), so `git add -A` commits nothing of it."""
    repo = git_repo(tmp_path / "shop")
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(marker), "1", "init", "--defaults", str(repo)],
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    staging = [p.name for p in repo.iterdir() if p.name.startswith(".edaenv-staging-")]
    assert len(staging) == 1 and len(list((repo / staging[0]).iterdir())) > 10
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == ["README.md"]


# Small filesystems (tmpfs): root can mount them, as on CI.
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(fs: Path, leave: int) -> None:
    """Use up the filesystem but `leave` bytes."""
    free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
    (fs / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("leave", [0, 8192, 32768, 65536])
def test_init_on_a_full_disk_writes_nothing(small_fs: Path, leave: int) -> None:
    repo = small_fs / "shop"
    repo.mkdir()
    fill(small_fs, leave)
    before = snapshot(small_fs)
    result = run_edaenv("init", "--defaults", cwd=repo)
    assert result.code == 2, result.err
    assert result.err.startswith(f"error: {repo}"), result.err
    assert result.err.endswith(
        ": No space left on device: nothing was written\n"
        "  hint: free some disk space and run again\n"
    )
    assert snapshot(small_fs) == before


@pytest.mark.parametrize("leave", [0, 4096, 8192])
def test_init_force_and_render_on_a_full_disk_change_nothing(small_fs: Path, leave: int) -> None:
    repo = small_fs / "shop"
    repo.mkdir()
    assert run_edaenv("init", "--defaults", cwd=repo).code == 0
    config = repo / "edaenv.yaml"
    config.write_text(config.read_text().replace("broker: kafka", "broker: rabbitmq"))
    fill(small_fs, leave)
    before = snapshot(small_fs)
    for args in (["render"], ["init", "--defaults", "--force", "--broker", "nats"]):
        result = run_edaenv(*args, cwd=repo)
        assert result.code == 2, result.err
        assert "No space left on device" in result.err and "Traceback" not in result.err
        assert snapshot(small_fs) == before, args


def test_a_read_only_repository_gets_a_located_message(small_fs: Path) -> None:
    repo = small_fs / "shop"
    repo.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    before = snapshot(small_fs)
    result = run_edaenv("init", "--defaults", cwd=repo)
    assert (result.code, result.err) == (
        2,
        f"error: {repo}: Read-only file system: nothing was written\n"
        "  hint: make it writable, or run where you can write\n",
    )
    assert snapshot(small_fs) == before


def test_render_on_a_read_only_repository_changes_nothing(small_fs: Path) -> None:
    repo = small_fs / "shop"
    repo.mkdir()
    assert run_edaenv("init", "--defaults", cwd=repo).code == 0
    config = repo / "edaenv.yaml"
    config.write_text(config.read_text().replace("broker: kafka", "broker: nats"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    before = snapshot(small_fs)
    result = run_edaenv("render", cwd=repo)
    assert result.code == 2, result.err
    assert "Read-only file system" in result.err and "Traceback" not in result.err
    assert snapshot(small_fs) == before


def test_ci_prepare_on_a_full_disk_is_a_located_error(small_fs: Path) -> None:
    """A fresh clone has no .env: `ci prepare` writes one, and a full disk must not take the
    "unexpected error" path (exit 1) nor leave half a secrets file."""
    repo = small_fs / "shop"
    repo.mkdir()
    assert run_edaenv("init", "--defaults", cwd=repo).code == 0
    (repo / "eda" / ".env").unlink()
    fill(small_fs, 0)
    before = snapshot(small_fs)
    result = run_edaenv("ci", "prepare", cwd=repo)
    assert result.code == 2, result.err
    assert result.err.endswith(
        ": No space left on device: nothing was written\n"
        "  hint: free some disk space and run again\n"
    ), result.err
    assert snapshot(small_fs) == before
