"""Outbox rows the relay cannot publish: recorded in the `outbox_stuck` table, so that
`edaenv status`, the relay's metrics and `edaenv bundle` show each one with its reason.

A row is stuck when no contract names its event type, its payload breaks its contract, its
headers are not a JSON object, or it is larger than the broker accepts. A stuck row holds back
the later rows of its aggregate (publishing them would break the aggregate's order); other
aggregates flow. The relay checks stuck rows again every `Options.retry_stuck` seconds, so a
row corrected in the table goes out by itself; a contract added needs a relay restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edaenv.errors import UsageError

if TYPE_CHECKING:
    import psycopg

    from edaenv.config import Config

REASONS = ("no-contract", "invalid-payload", "too-large", "bad-headers")

# The same table as db/migrations/002_outbox_stuck.sql: the relay creates it in databases made
# before that migration existed (the scaffold's migrations run only when the volume is new).
TABLE = """
CREATE TABLE IF NOT EXISTS outbox_stuck (
    id     uuid        PRIMARY KEY,
    reason text        NOT NULL,
    detail text        NOT NULL,
    hint   text        NOT NULL,
    pointer text,
    rule   text,
    since  timestamptz NOT NULL DEFAULT now()
)
"""
RECORD = """
INSERT INTO outbox_stuck (id, reason, detail, hint, pointer, rule)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail,
    hint = EXCLUDED.hint, pointer = EXCLUDED.pointer, rule = EXCLUDED.rule
"""
# Recorded rows that were published since (corrected in place) or deleted do not count.
COUNTS = """
SELECT s.reason, count(*) FROM outbox_stuck s JOIN outbox o ON o.id = s.id
WHERE o.published_at IS NULL GROUP BY s.reason
"""
READ = """
SELECT s.id::text, o.aggregate_type, o.aggregate_id, o.event_type, s.reason, s.detail, s.hint,
       s.pointer, s.rule, s.since, o.seq
FROM outbox_stuck s JOIN outbox o ON o.id = s.id
WHERE o.published_at IS NULL
ORDER BY o.seq
LIMIT %s
"""
# One pass over the unpublished rows (the partial index), however many rows are stuck.
WAITING = """
SELECT aggregate_id, seq FROM outbox
WHERE published_at IS NULL AND aggregate_id = ANY(%s)
"""
PRUNE = """
DELETE FROM outbox_stuck s
WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = s.id AND o.published_at IS NULL)
"""


@dataclass(frozen=True)
class Problem:
    """Why the relay cannot publish a row, and how to fix it. `pointer` (a JSON pointer into
    the payload) and `rule` (the contract's keyword broken) are set for invalid payloads."""

    reason: str  # one of REASONS
    detail: str
    hint: str
    pointer: str | None = None
    rule: str | None = None


@dataclass(frozen=True)
class StuckRow:
    id: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    reason: str
    detail: str
    hint: str
    pointer: str | None
    rule: str | None
    since: datetime
    waiting: int  # later unpublished rows of its aggregate, held back behind it

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "event_type": self.event_type,
            "reason": self.reason,
            "detail": self.detail,
            "hint": self.hint,
            "pointer": self.pointer,
            "rule": self.rule,
            "since": self.since.isoformat(),
            "waiting": self.waiting,
        }

    def shown(self) -> str:
        behind = f"; {self.waiting} later row(s) of its aggregate wait" if self.waiting else ""
        return (
            f"row {self.id} ({self.aggregate_type} {self.aggregate_id!r}, "
            f"{self.event_type!r}): {self.reason}: {self.detail}{behind}"
        )


def ensure_table(conn: psycopg.Connection[Any]) -> None:
    """Create outbox_stuck when it is missing. Checked first: CREATE ... IF NOT EXISTS needs the
    CREATE privilege even when the table exists, which a relay's role may lack."""
    import psycopg

    if conn.execute("SELECT to_regclass('outbox_stuck') IS NOT NULL").fetchone() == (True,):
        return
    try:
        with conn.transaction():
            # Two relays starting at once would race on CREATE TABLE IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('outbox_stuck'))")
            conn.execute(TABLE)
    except psycopg.errors.InsufficientPrivilege:
        raise UsageError(
            f"the database role {conn.info.user!r} may not create the table outbox_stuck, where "
            "the relay records the rows it cannot publish",
            hint="apply db/migrations/002_outbox_stuck.sql as the database's owner and grant "
            "the relay's role SELECT, INSERT, UPDATE, DELETE on outbox_stuck",
        ) from None


def record(conn: psycopg.Connection[Any], found: list[tuple[str, Problem]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            RECORD, [(id_, p.reason, p.detail, p.hint, p.pointer, p.rule) for id_, p in found]
        )


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Unpublished stuck rows by reason (every reason, 0 when none)."""
    found = {str(reason): int(n) for reason, n in conn.execute(COUNTS).fetchall()}
    return {reason: found.get(reason, 0) for reason in sorted({*REASONS, *found})}


def prune(conn: psycopg.Connection[Any]) -> int:
    """Forget rows published or deleted since they were recorded; how many."""
    return conn.execute(PRUNE).rowcount


def read(conn: psycopg.Connection[Any], limit: int = 50) -> list[StuckRow]:
    """The oldest unpublished stuck rows; none when the table does not exist yet (no relay of
    this version has run against the database)."""
    if conn.execute("SELECT to_regclass('outbox_stuck') IS NULL").fetchone() == (True,):
        return []
    rows = conn.execute(READ, (limit,)).fetchall()
    if not rows:
        return []
    aggregates = sorted({row[2] for row in rows})
    pending: dict[str, list[int]] = {}
    for aggregate, seq in conn.execute(WAITING, (aggregates,)).fetchall():
        pending.setdefault(aggregate, []).append(seq)
    found = []
    for id_, type_, aggregate, event, reason, detail, hint, pointer, rule, since, seq in rows:
        waiting = sum(1 for later in pending.get(aggregate, ()) if later > seq)
        found.append(
            StuckRow(
                id_, type_, aggregate, event, reason, detail, hint, pointer, rule, since, waiting
            )
        )
    return found


@dataclass(frozen=True)
class Report:
    total: int  # unpublished stuck rows
    rows: list[StuckRow]  # the oldest of them

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "rows": [row.to_json() for row in self.rows]}


def report(conn: psycopg.Connection[Any], limit: int = 50) -> Report:
    rows = read(conn, limit)
    total = sum(counts(conn).values()) if len(rows) == limit else len(rows)
    return Report(total, rows)


def read_stack(config: Config, limit: int = 50) -> Report | None:
    """The stack's stuck rows, for `status` and `bundle`: none without an outbox; None when the
    database does not answer (status shows postgres' own state then)."""
    import psycopg

    from edaenv.stack.endpoints import connect_database, database_url

    if not (config.has("outbox") and config.has("postgres")):
        return Report(0, [])
    try:
        with connect_database(database_url(config), timeout=3) as conn:
            return report(conn, limit)
    except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege):
        return None
    except psycopg.errors.UndefinedTable:  # no outbox table: the migration has not run
        return Report(0, [])
