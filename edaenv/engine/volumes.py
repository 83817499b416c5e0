"""Which secrets a volume keeps from its first start, fingerprinted as a volume label.

PostgreSQL and Grafana write their credentials into their data volume once; a later .env with
other secrets is ignored by them, and every client then fails to log in. The label lets `up`
tell such a volume before starting anything.
"""

from __future__ import annotations

import hashlib

from edaenv.config import Config

SECRETS_LABEL = "dev.edaenv.secrets"
VOLUME_SECRETS: dict[str, tuple[str, ...]] = {
    "postgres-data": ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),
    "grafana-data": ("GRAFANA_ADMIN_PASSWORD",),
}


def fingerprint(config: Config, secrets: dict[str, str], keys: tuple[str, ...]) -> str:
    text = "\0".join([config.project, *(f"{key}={secrets.get(key, '')}" for key in keys)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def volume_labels(config: Config, secrets: dict[str, str]) -> dict[str, dict[str, str]]:
    """Compose volume name -> labels to declare on it."""
    return {
        volume: {SECRETS_LABEL: fingerprint(config, secrets, keys)}
        for volume, keys in VOLUME_SECRETS.items()
    }
