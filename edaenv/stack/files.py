"""Write a set of files all or nothing: `init` and `render` never leave half their files behind.

Every file is first written in full to a staging directory beside the targets (same
filesystem, so a rename moves it into place at once), then renamed over its target. Any
exception or signal before the last rename puts every target back as it was, previous content
or absent, directories included. Renames need no free space, so the rollback works on a full
disk too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from edaenv.errors import UsageError

STAGING_PREFIX = ".edaenv-staging-"
# A `.gitignore` of `*` makes git ignore the directory it is in, itself included: a staging
# directory left by a SIGKILL or a power cut can never be committed, wherever it is.
IGNORE_ALL = "# edaenv's staging directory: never commit, safe to delete.\n*\n"


def commit_files(
    files: Mapping[Path, str | bytes],
    *,
    staging: Path,
    modes: Mapping[Path, int] | None = None,
) -> list[Path]:
    """Write every file of `files` (target -> content) or none of them.

    The files are staged in a fresh `.edaenv-staging-*` directory made inside `staging` (a
    directory on the same filesystem as the targets; created if missing), each with its mode
    from the first byte (`modes`, default 0o666, both less the umask), then renamed into place.
    On any exception or signal (SIGINT, SIGTERM) every target is restored and the exception
    re-raised; the staging directory is removed in all cases. An OSError names the target (or
    the directory) it failed on, never a staging path. Returns the targets, in the order given.
    """
    modes = modes or {}
    made: list[Path] = []  # directories this call created, parents first
    # (target, what it was), noted before its rename: a signal may land right after one
    done: list[tuple[Path, Path | None]] = []
    box = staging / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
    with _Signals() as signals:
        try:
            _make_dirs(staging, made)
            _at(staging, os.mkdir, box, 0o700)
            _at(staging, _write, box / ".gitignore", IGNORE_ALL.encode(), 0o600)
            staged = _stage(files, modes, box)
            backups = _back_up(files, box)
            for target in files:
                _make_dirs(target.parent, made)
            for target in files:
                done.append((target, backups.get(target)))
                _at(target, os.replace, staged[target], target)
        except BaseException:
            signals.hold()  # a second Ctrl-C must not cut the rollback short
            _roll_back(done)
            _remove_staging(box)
            _remove_dirs(made)
            raise
        signals.hold()  # committed: a signal now waits until the staging directory is gone
        _remove_staging(box)
        _remove_dirs(made)  # those made only for staging; the others hold files now
    return list(files)


def file_error(exc: OSError) -> UsageError:
    """A failed read or write as the user's error: which path, why, what to do (exit 2)."""
    where = str(exc.filename) if exc.filename else None
    if isinstance(exc, IsADirectoryError | NotADirectoryError | FileExistsError):
        hint = "a file and a directory are in each other's way: move one of them aside"
    elif isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        hint = "make it writable, or run where you can write"
    elif exc.errno == errno.ENOSPC:
        hint = "free some disk space and run again"
    else:
        hint = "fix the cause and run again"
    return UsageError(f"{exc.strerror or exc}: nothing was written", where=where, hint=hint)


def _stage(
    files: Mapping[Path, str | bytes], modes: Mapping[Path, int], box: Path
) -> dict[Path, Path]:
    staged: dict[Path, Path] = {}
    for number, (target, content) in enumerate(files.items()):
        data = content.encode("utf-8") if isinstance(content, str) else content
        staged[target] = box / f"{number}.{target.name}"
        _at(target, _write, staged[target], data, modes.get(target, 0o666))
    return staged


def _back_up(files: Mapping[Path, object], box: Path) -> dict[Path, Path]:
    """Keep what each existing target is now, as a hard link (no data copied, no space
    needed); a copy where the filesystem has no hard links."""
    backups: dict[Path, Path] = {}
    for number, target in enumerate(files):
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(target))
        if not os.path.lexists(target):
            continue
        backup = box / f"{number}.was"
        try:
            os.link(target, backup, follow_symlinks=False)
        except OSError:
            _at(target, shutil.copy2, target, backup, follow_symlinks=False)
        backups[target] = backup
    return backups


def _roll_back(done: list[tuple[Path, Path | None]]) -> None:
    """Put every target back as it was; best effort for each, so one failure does not
    leave the others changed."""
    for target, backup in reversed(done):
        with contextlib.suppress(OSError):
            if backup is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(backup, target)


def _remove_staging(box: Path) -> None:
    with contextlib.suppress(OSError):
        for path in box.iterdir():
            if path.name != ".gitignore":  # last: it keeps the rest out of git until then
                path.unlink()
        (box / ".gitignore").unlink(missing_ok=True)
        box.rmdir()


def _remove_dirs(made: list[Path]) -> None:
    for directory in reversed(made):
        with contextlib.suppress(OSError):  # not empty: it holds a file now
            directory.rmdir()


def _write(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: a fresh file, so `mode` holds from the first byte (a secret is never readable
    # by others, not even while empty).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename: no 0-byte file after a crash


def _make_dirs(directory: Path, made: list[Path]) -> None:
    missing = []
    for parent in [directory, *directory.parents]:
        if parent.is_dir():
            break
        missing.append(parent)
    for parent in reversed(missing):
        made.append(parent)
        _at(parent, os.mkdir, parent)


def _at(path: Path, operation: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Run a file operation; an OSError names `path`, the file the user knows, not the
    staging name it happened on."""
    try:
        operation(*args, **kwargs)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from exc


class _Signals:
    """While files are committed, SIGINT raises KeyboardInterrupt and SIGTERM SystemExit(143)
    (by default SIGTERM ends Python at once, with no rollback). After `hold()`, a signal waits
    until the block is over; it is raised then if nothing else is."""

    def __enter__(self) -> _Signals:
        self.held: list[int] | None = None
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def hold(self) -> None:
        if self.held is None:
            self.held = []

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.held is None:
            _raise(signum)
        else:
            self.held.append(signum)

    def __exit__(self, kind: object, *_: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.held and kind is None:
            _raise(self.held[0])


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
