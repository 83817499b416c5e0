"""The record of faults: `<scaffold>/.generated/faults.json`, git-ignored.

Active faults are what `inject status` lists and `inject heal --all` undoes; healed and
one-shot faults go to a bounded history that the failure bundle includes. Writers are the CLI
and detached healer processes, so every read-modify-write holds an exclusive lock and replaces
the file atomically.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edaenv.errors import UsageError

FILE_NAME = "faults.json"
HISTORY_LIMIT = 200
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class HeldEvent:
    """An event a `delay` fault holds back until it is released."""

    topic: str
    key: str
    value: str
    attributes: Mapping[str, str]


@dataclass(frozen=True)
class Fault:
    """One injected fault. The JSON names are the field names; a field that does not apply to
    a kind of fault is None and absent from the JSON, as it always was in faults.json."""

    id: str
    kind: str  # kill|stop|pause|partition|restart|duplicate|poison|burst|reorder|delay
    target: str  # the role of a container fault, the topic of a message fault
    started: str
    ended: str | None = None  # one-shot faults: done when recorded
    summary: str | None = None
    # container faults
    container: str | None = None
    container_name: str | None = None
    # Addresses the fault gives up (kill, stop, partition): `heal --all` restores them.
    addresses: Mapping[str, str] | None = None
    signal: str | None = None  # kill
    networks: Mapping[str, tuple[str, ...]] | None = None  # partition: network -> aliases
    # message faults
    event_ids: tuple[str, ...] | None = None
    dropped_as_duplicate: tuple[str, ...] | None = None
    times: int | None = None  # duplicate
    delivered: int | None = None  # duplicate
    poison: str | None = None  # poison: unparseable|invalid
    count: int | None = None  # burst
    seconds: float | None = None  # burst
    rate: int | None = None  # burst
    first_id: str | None = None  # burst
    last_id: str | None = None  # burst
    key: str | None = None  # reorder: the aggregate
    held: tuple[HeldEvent, ...] | None = None  # delay
    # self-healing (`--for`)
    until: str | None = None
    healer_pid: int | None = None
    # history
    healed: str | None = None
    healed_by: str | None = None
    # Not stored: what `inject status` and `inject heal` report about the fault.
    now: str | None = None
    heal_result: str | None = None
    # Keys this edaenv does not know (a newer edaenv wrote them): kept, written back as read.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_container_fault(self) -> bool:
        return self.container is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            if f.name == "held":
                value = [dataclasses.asdict(h) | {"attributes": dict(h.attributes)} for h in value]
            elif f.name == "networks":
                value = {name: list(aliases) for name, aliases in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            data[f.name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        if values.get("held") is not None:
            values["held"] = tuple(HeldEvent(**h) for h in values["held"])
        if values.get("networks") is not None:
            values["networks"] = {n: tuple(a) for n, a in values["networks"].items()}
        for name in ("event_ids", "dropped_as_duplicate"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)


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
    """faults.json: `{"active": [...], "history": [...]}`, each a Fault.to_json(). The only
    code that reads or writes the file."""

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
            text = json.dumps(_to_json(data), indent=2, sort_keys=True) + "\n"
            tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(self.path)

    def active(self) -> list[Fault]:
        return self._read()["active"]

    def history(self) -> list[Fault]:
        return self._read()["history"]

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        """The record as faults.json holds it (for the failure bundle)."""
        return _to_json(self._read())

    def _read(self) -> dict[str, list[Fault]]:
        if not self.path.is_file():
            return {"active": [], "history": []}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"the fault record is not valid JSON: {exc.msg}",
                where=f"{self.path}:{exc.lineno}",
                hint=_BY_HAND,
            ) from None
        faults: dict[str, list[Fault]] = {"active": [], "history": []}
        for part, records in faults.items():
            for index, record in enumerate(data.get(part, []) if isinstance(data, dict) else []):
                try:
                    records.append(Fault.from_json(record))
                except (TypeError, AttributeError, ValueError):
                    raise UsageError(
                        "a fault record lacks id, kind, target or started, or has a field of "
                        "the wrong type",
                        where=f"{self.path}#/{part}/{index}",
                        hint=_BY_HAND,
                    ) from None
        return faults

    def add(self, fault: Fault) -> None:
        with self.edit() as data:
            data["active"].append(fault)

    def record(self, fault: Fault) -> None:
        """A one-shot fault (restart, duplicate, burst...): history only, nothing to undo."""
        with self.edit() as data:
            data["history"].append(fault)

    def update(self, fault_id: str, **changes: Any) -> Fault | None:
        """Change an active fault; returns it changed, None when it is no longer active."""
        changed = None
        with self.edit() as data:
            for index, fault in enumerate(data["active"]):
                if fault.id == fault_id:
                    changed = data["active"][index] = dataclasses.replace(fault, **changes)
        return changed

    def resolve(self, fault_id: str, how: str) -> Fault | None:
        """Move an active fault to the history; None when it was not active (already healed)."""
        with self.edit() as data:
            for fault in data["active"]:
                if fault.id == fault_id:
                    data["active"].remove(fault)
                    data["history"].append(dataclasses.replace(fault, healed=now(), healed_by=how))
                    return fault
        return None


_BY_HAND = "heal by hand (`docker unpause/start/network connect`), then delete the file"


def _to_json(data: dict[str, list[Fault]]) -> dict[str, list[dict[str, Any]]]:
    return {part: [fault.to_json() for fault in faults] for part, faults in data.items()}
