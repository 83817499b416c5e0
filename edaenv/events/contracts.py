"""Event contracts: one JSON Schema per event type and version under the scaffold's events/.

Each schema carries its routing metadata under `x-edaenv`:
    {"event": "OrderPlaced", "version": 1, "topic": "orders", "key": "orderId",
     "aggregate": "Order", "owner": "orders-team"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edaenv.errors import ContractError

META_KEY = "x-edaenv"
REQUIRED_META = ("event", "version", "topic", "key", "owner")
SUFFIX = ".schema.json"


@dataclass(frozen=True)
class Contract:
    event: str
    version: int
    topic: str
    key: str
    owner: str
    aggregate: str
    schema: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return f"{self.event}.v{self.version}"


def load_contracts(events_dir: Path) -> list[Contract]:
    """Every contract under events_dir, sorted by event type then version."""
    if not events_dir.is_dir():
        return []
    contracts = [load_contract(path) for path in sorted(events_dir.rglob(f"*{SUFFIX}"))]
    seen: dict[str, Path] = {}
    for contract in contracts:
        if contract.name in seen:
            raise ContractError(
                f"{contract.name} is defined twice: {seen[contract.name]} and {contract.path}",
                hint="keep one file per event type and version",
            )
        seen[contract.name] = contract.path
    return sorted(contracts, key=lambda c: (c.event, c.version))


def load_contract(path: Path) -> Contract:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContractError(
            f"not valid JSON: {exc.msg}",
            where=f"{path}:{exc.lineno}",
            hint="fix the JSON syntax at that line",
        ) from None
    meta = schema.get(META_KEY) if isinstance(schema, dict) else None
    if not isinstance(meta, dict):
        raise ContractError(
            f"the schema has no '{META_KEY}' object",
            where=str(path),
            hint=f'add "{META_KEY}": {{"event", "version", "topic", '
            f'"key", "owner"}} to the schema\'s top level',
        )
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ContractError(
            f"'{META_KEY}' lacks {', '.join(missing)}",
            where=f"{path}#/{META_KEY}",
            hint=f"every contract names: {', '.join(REQUIRED_META)}",
        )
    if not isinstance(meta["version"], int) or meta["version"] < 1:
        raise ContractError(
            "the version must be a positive integer",
            where=f"{path}#/{META_KEY}/version",
            hint='e.g. "version": 1',
        )
    return Contract(
        event=str(meta["event"]),
        version=meta["version"],
        topic=str(meta["topic"]),
        key=str(meta["key"]),
        owner=str(meta["owner"]),
        aggregate=str(meta.get("aggregate", meta["event"])),
        schema=schema,
        path=path,
    )


def topics(contracts: list[Contract]) -> list[str]:
    return sorted({c.topic for c in contracts})
