"""Which secrets a volume keeps from its first start, remembered in the git-ignored .generated/.

PostgreSQL and Grafana write their credentials into their data volume once; a later .env with
other secrets is ignored by them, and every client then fails to log in. `up` records, for each
such volume it sees created, a keyed fingerprint of the secrets it was created with, and warns
when .env no longer matches.

Nothing secret-derived goes into committed files (compose.yaml): the fingerprint is an HMAC
under a random key kept beside it in `.generated/volumes.json` (0600), so it says nothing that
.env itself, on the same disk, does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets as random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edaenv.config import Config
from edaenv.engine.status import PROJECT_LABEL

if TYPE_CHECKING:
    from edaenv.engine.api import Engine

Keys = tuple[str, ...]  # the .env keys a volume keeps
VOLUME_LABEL = "com.docker.compose.volume"
VOLUME_SECRETS: dict[str, Keys] = {
    "postgres-data": ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),
    "grafana-data": ("GRAFANA_ADMIN_PASSWORD",),
}


def project_volumes(config: Config, engine: Engine) -> list[dict[str, Any]]:
    """The project's volumes, from one call of the engine's volume list."""
    return engine.volumes({"label": [f"{PROJECT_LABEL}={config.project}"]})


def stale_volumes(
    config: Config, volumes: list[dict[str, Any]], secrets: dict[str, str]
) -> list[str]:
    """Of `volumes`, those created with other credentials than the current .env. `volumes`
    is the list from before compose starts: the record forgets the volumes that no longer
    existed then, so one that compose makes again under that name is recorded afresh."""
    record = _read(config)
    existing = {}
    stale = []
    for volume, keys in _keeping_secrets(volumes):
        name = str(volume.get("Name"))
        entry = record["volumes"].get(name)
        if entry:
            existing[name] = entry
            if entry.get("fingerprint") != _fingerprint(record["key"], secrets, keys):
                stale.append(name)
    if existing != record["volumes"]:
        _save(config, {"key": record["key"], "volumes": existing})
    return sorted(stale)


def remember_volumes(
    config: Config, volumes: list[dict[str, Any]], secrets: dict[str, str]
) -> None:
    """Once compose has created the volumes (`volumes`, listed then): record the secrets of
    those not recorded yet. A recorded volume keeps its entry: it still holds the credentials
    of its first start, whatever .env says now. (The engine has no id for a volume instance,
    so a volume removed and made again behind edaenv's back between two of its runs keeps the
    old entry.)"""
    record = _read(config)
    present = {
        str(volume.get("Name")): record["volumes"].get(str(volume.get("Name")))
        or {"fingerprint": _fingerprint(record["key"], secrets, keys)}
        for volume, keys in _keeping_secrets(volumes)
    }
    if present != record["volumes"]:
        _save(config, {"key": record["key"], "volumes": present})


def _keeping_secrets(volumes: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Keys]]:
    found = []
    for volume in volumes:
        keys = VOLUME_SECRETS.get((volume.get("Labels") or {}).get(VOLUME_LABEL, ""))
        if keys:
            found.append((volume, keys))
    return found


def _fingerprint(key: str, secrets: dict[str, str], keys: Keys) -> str:
    text = "\0".join(f"{name}={secrets.get(name, '')}" for name in keys)
    return hmac.new(bytes.fromhex(key), text.encode(), hashlib.sha256).hexdigest()


def _path(config: Config) -> Path:
    # Per project: CI isolation (EDAENV_PROJECT) runs other stacks from the same scaffold.
    return config.generated_dir / "volumes" / f"{config.project}.json"


def _read(config: Config) -> dict[str, Any]:
    try:
        data = json.loads(_path(config).read_text(encoding="utf-8"))
        if isinstance(data.get("key"), str) and isinstance(data.get("volumes"), dict):
            bytes.fromhex(data["key"])
            return data
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or damaged: start afresh (only the warning depends on it)
    return {"key": random.token_hex(32), "volumes": {}}


def _save(config: Config, record: dict[str, Any]) -> None:
    from edaenv.stack.files import commit_files

    path = _path(config)
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    # A full or read-only disk: only the warning depends on the record.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        commit_files({path: text}, staging=path.parent, modes={path: 0o600})
