"""The record of faults: `<scaffold>/.generated/faults.json`, git-ignored.

Active faults are what `inject status` lists and `inject heal --all` undoes; healed and
one-shot faults go to a bounded history that the failure bundle includes. Writers are the CLI
and detached healer processes, so every read-modify-write holds an exclusive lock and replaces
the file atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edaenv.errors import UsageError

FILE_NAME = "faults.json"
HISTORY_LIMIT = 200
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Fault = dict[str, Any]


def parse_duration(text: str, option: str = "--for") -> float:
    """'10s', '1.5m', '500ms', '2h' or bare seconds -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(
            f"'{text}' is not a duration",
            where=option,
            hint="write e.g. 10s, 500ms, 2m or 1h (a bare number is seconds)",
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_id() -> str:
    return secrets.token_hex(3)


class FaultStore:
    def __init__(self, generated_dir: Path):
        self.path = generated_dir / FILE_NAME
        self._lock_path = generated_dir / f".{FILE_NAME}.lock"

    @contextmanager
    def edit(self) -> Iterator[dict[str, list[Fault]]]:
        """Read, let the caller change, write back atomically, all under the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            data["history"] = data["history"][-HISTORY_LIMIT:]
            tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(self.path)

    def active(self) -> list[Fault]:
        return self._read()["active"]

    def history(self) -> list[Fault]:
        return self._read()["history"]

    def _read(self) -> dict[str, list[Fault]]:
        if not self.path.is_file():
            return {"active": [], "history": []}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"the fault record is not valid JSON: {exc.msg}",
                where=f"{self.path}:{exc.lineno}",
                hint="heal by hand (`docker unpause/start/network connect`), then delete the file",
            ) from None
        return {"active": list(data.get("active", [])), "history": list(data.get("history", []))}

    def add(self, fault: Fault) -> None:
        with self.edit() as data:
            data["active"].append(fault)

    def record(self, fault: Fault) -> None:
        """A one-shot fault (restart, duplicate, burst...): history only, nothing to undo."""
        with self.edit() as data:
            data["history"].append(fault)

    def update(self, fault_id: str, **changes: Any) -> None:
        with self.edit() as data:
            for fault in data["active"]:
                if fault["id"] == fault_id:
                    fault.update(changes)

    def resolve(self, fault_id: str, how: str) -> Fault | None:
        """Move an active fault to the history; None when it was not active (already healed)."""
        with self.edit() as data:
            for fault in data["active"]:
                if fault["id"] == fault_id:
                    data["active"].remove(fault)
                    data["history"].append({**fault, "healed": now(), "healed_by": how})
                    return fault
        return None
