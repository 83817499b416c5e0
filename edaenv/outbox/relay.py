"""The transactional outbox relay: publish committed outbox rows, at least once, in order per
aggregate, with any number of relays running against the same table.

How a batch works (one transaction, one claiming statement):
1. read the oldest unpublished rows, the head (no lock);
2. try a transaction-scoped advisory lock on each aggregate of the head, once per aggregate
   (`pg_try_advisory_xact_lock`: aggregates another relay holds are skipped, never waited for);
3. claim the head's rows of the aggregates now held that are still unpublished,
   `ORDER BY seq ... FOR UPDATE SKIP LOCKED`;
4. publish them and wait for the broker's acknowledgement of every one;
5. mark them published and commit, which releases the locks.

Invariants:
- Rows of an aggregate are claimed only by the transaction holding its advisory lock. A holder
  always publishes a prefix (in seq order) of its aggregate's unpublished rows and commits
  before its lock is released. The head holds a prefix of each aggregate's unpublished rows as
  of the statement's snapshot; rows of it that a previous holder published after that
  snapshot are re-checked by FOR UPDATE (READ COMMITTED re-evaluates the WHERE clause on the
  newest row version) and dropped. What is claimed is therefore the aggregate's oldest
  unpublished rows, and no other relay can publish a later row of it meanwhile. Nothing but
  relays locks or updates unpublished rows, so neither SKIP LOCKED nor the re-check drops a row
  of an aggregate held that is still unpublished (services only INSERT into the outbox).
- `seq` orders rows of one aggregate only. The service writes an aggregate's events serially
  (it updates or locks the aggregate first), so per aggregate, `seq` order is commit order. There
  is no cursor over `seq`: every unpublished row is a candidate whenever it commits, so rows that
  commit out of order (a lower seq committing last) are never skipped.
- A row is marked published only after the broker acked it. A crash between the ack and the
  commit publishes the batch again (duplicates, never losses); consumers deduplicate by event id.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edaenv.events.envelope import message_from_outbox
from edaenv.outbox.metrics import RelayMetrics
from edaenv.outbox.runtime import DATABASE_OPTIONS
from edaenv.outbox.tracing import Tracer

if TYPE_CHECKING:
    import psycopg

    from edaenv.brokers.base import Broker, Message
    from edaenv.events.contracts import Contract

log = logging.getLogger("edaenv.relay")

# First key of the two-int advisory locks: keeps the relay's locks apart from the application's.
LOCK_SPACE = 0x0ED0B0C5 - (1 << 31)

# Steps 1-3 in one statement. The CTEs are materialized: each aggregate's lock is tried once,
# at one moment, and then all of its head rows are claimed in seq order, or none. Locks are
# tried oldest aggregate first, and only until a batch's worth is held. Rows are fetched again by
# ctid: a row updated meanwhile is followed to its newest version by FOR UPDATE and dropped, as
# published_at IS NULL no longer holds there.
CLAIM = """
WITH head AS MATERIALIZED (
    SELECT ctid AS row, seq, aggregate_id FROM outbox
    WHERE published_at IS NULL ORDER BY seq LIMIT %(scan)s
), candidates AS MATERIALIZED (
    SELECT aggregate_id FROM head GROUP BY aggregate_id ORDER BY min(seq)
), held AS MATERIALIZED (
    SELECT aggregate_id FROM candidates
    WHERE pg_try_advisory_xact_lock(%(space)s, hashtext(aggregate_id))
    LIMIT %(limit)s
)
SELECT id::text, aggregate_type, aggregate_id, event_type, payload::text, headers::text,
       created_at, ctid::text
FROM outbox
WHERE ctid = ANY (ARRAY(SELECT row FROM head JOIN held USING (aggregate_id)))
  AND published_at IS NULL
ORDER BY seq
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
PENDING = "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)"
# By ctid: the claim locked the rows, so their versions cannot move before this update.
MARK = "UPDATE outbox SET published_at = now() WHERE ctid = ANY(%(rows)s::tid[])"
STATS = """
SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
FROM outbox WHERE published_at IS NULL
"""
RETENTION = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => %(keep)s)
    LIMIT %(limit)s
)
"""


@dataclass(frozen=True)
class Options:
    batch_size: int = 500
    poll_interval: float = 1.0  # fallback when no NOTIFY arrives
    retention: float = 24 * 3600.0  # seconds a published row is kept
    retention_every: float = 60.0
    stats_every: float = 2.0
    backoff_base: float = 0.2
    backoff_max: float = 10.0


@dataclass(frozen=True)
class _Batch:
    conn: psycopg.Connection[Any]  # its transaction is open: rows and aggregates locked
    rows: list[tuple[Row, str]]  # the rows to publish, with their topics
    started: float
    spans: list[Any] = field(default_factory=list)  # started when the batch is published


@dataclass(frozen=True)
class Row:
    id: Any
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: str
    headers: str  # JSON, parsed on the publisher thread (the claiming one waits on the database)
    created_at: datetime
    ctid: str  # where the claimed (locked) row version is


Route = Callable[[Row], "str | None"]


def contract_router(contracts: Sequence[Contract]) -> Route:
    """Topic of a row from the contracts: event_type is `OrderPlaced` or `OrderPlaced.v1`."""
    topics: dict[str, str] = {}
    for contract in contracts:
        topics.setdefault(contract.event, contract.topic)
        topics[contract.name] = contract.topic

    def route(row: Row) -> str | None:
        return topics.get(row.event_type)

    return route


def to_message(row: Row, topic: str) -> Message:
    """The envelope `publish` uses, from the row's headers (CloudEvents attributes by name, as
    envelope.outbox_row writes them); attributes a hand-written row lacks, or holds as null,
    are completed from its columns, and other null headers are dropped."""
    headers = {
        "specversion": "1.0",
        "id": row.id,
        "type": row.event_type,
        "source": f"/outbox/{row.aggregate_type}",
        "subject": row.aggregate_id,
        "datacontenttype": "application/json",
    }
    headers.update((k, v) for k, v in json.loads(row.headers).items() if v is not None)
    if "time" not in headers:
        headers["time"] = row.created_at.isoformat()
    return message_from_outbox(topic, row.aggregate_id, row.payload, headers)


class Relay:
    def __init__(
        self,
        database_url: str,
        broker: Broker,
        route: Route,
        options: Options | None = None,
        metrics: RelayMetrics | None = None,
        tracer: Tracer | None = None,
        topics: Sequence[str] = (),
    ):
        self.database_url = database_url
        self.broker = broker
        self.route = route
        self.options = options or Options()
        self.metrics = metrics or RelayMetrics()
        self.tracer = tracer
        self.topics = list(topics)
        self.healthy = False
        self._stop = threading.Event()
        self._conns: tuple[psycopg.Connection[Any], ...] = ()
        self._executor: ThreadPoolExecutor | None = None
        self._listen: psycopg.Connection[Any] | None = None
        self._contended = False
        self._topology_ready = False
        self._next_stats = 0.0
        self._next_retention = 0.0
        self._unroutable_logged: set[str] = set()

    def stop(self) -> None:
        """Finish the batch in flight, then return from run(). Safe from a signal handler."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self._connect()
                    self.pump()
                    self.healthy, failures = True, 0
                    self._housekeeping()
                    if self._contended:
                        self._stop.wait(0.005)
                    else:
                        self._wait()
                except Exception as exc:  # a daemon loop: any failure backs off and retries
                    failures += 1
                    self.healthy = False
                    self.metrics.errors.inc()
                    delay = min(
                        self.options.backoff_max, self.options.backoff_base * 2 ** (failures - 1)
                    )
                    delay *= random.uniform(0.5, 1.0)
                    log.warning(
                        "relay: %s: %s (retrying in %.1fs)",
                        type(exc).__name__,
                        str(exc).strip(),
                        delay,
                    )
                    self._reset_if_broken()
                    self._stop.wait(delay)
        finally:
            self.close()

    def drain(self) -> int:
        """Publish until no unpublished row is left; the number published."""
        total = 0
        while True:
            total += self.pump()
            if not self._contended:
                return total
            time.sleep(0.005)

    def pump(self) -> int:
        """Relay batches until a claim finds nothing (or stop() was called); rows published.

        Two batches of half the batch size overlap, each in its own transaction on its own
        connection: while one is published (on the publisher thread), the next is claimed and
        queued behind it; the first is marked once acknowledged while the publisher goes on
        with the second. A claim skips the aggregates the batch in flight holds, exactly as
        another relay's would, so per-aggregate order is kept. Each batch is marked only after
        its own acknowledgement, and a crash re-publishes at most batch_size rows."""
        self._ready()
        total = 0
        inflight: deque[tuple[_Batch, Future[None]]] = deque()  # at most one when claiming
        # Two halves in flight at most, so never more than batch_size rows (a batch size of 1
        # does not overlap).
        depth = 2 if self.options.batch_size >= 2 else 1
        half = self.options.batch_size // depth
        try:
            while not self._stop.is_set():
                held = inflight[0][0].conn if inflight else None
                conn = self._conns[1] if held is self._conns[0] else self._conns[0]
                batch = self._claim(conn, limit=half, scan=half * (1 + len(inflight)))
                if batch is None:
                    break
                inflight.append((batch, self._publisher.submit(self._publish, batch)))
                if len(inflight) == depth:
                    total += self._settle(*inflight.popleft())
            while inflight:
                total += self._settle(*inflight.popleft())
        except BaseException as exc:
            for batch, published in inflight:  # queued behind a failure: roll back once done
                wait([published])
                self._abort(batch, exc)
            raise
        return total

    def relay_batch(self) -> int:
        """Claim, publish and mark one batch, without overlap; the number of rows published."""
        self._ready()
        size = self.options.batch_size
        batch = self._claim(self._conns[0], limit=size, scan=size)
        if batch is None:
            return 0
        return self._settle(batch, self._publisher.submit(self._publish, batch))

    def _ready(self) -> None:
        self._connect()
        if not self._topology_ready:
            self.broker.ensure_topology(self.topics)
            self._topology_ready = True

    def close(self) -> None:
        for conn in (*self._conns, self._listen):
            if conn is not None and not conn.closed:
                conn.close()
        self._conns, self._listen = (), None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def _publisher(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="relay-publish")
        return self._executor

    def _claim(self, conn: psycopg.Connection[Any], limit: int, scan: int) -> _Batch | None:
        """Claim a batch on conn; its transaction stays open (locks held) when rows were
        claimed. Sets _contended when rows are pending that other transactions hold."""
        started = time.perf_counter()
        try:
            with conn.cursor() as cur:
                cur.execute(CLAIM, {"scan": scan, "space": LOCK_SPACE, "limit": limit})
                rows = [Row(*r) for r in cur.fetchall()]
                if not rows:
                    self._contended = bool(cur.execute(PENDING).fetchone() == (True,))
                    conn.rollback()
                    return None
            self._contended = False
            routed = self._route(rows)
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        if not routed:
            conn.rollback()
            return None
        return _Batch(conn, routed, started)

    def _publish(self, batch: _Batch) -> None:
        messages = []
        for row, topic in batch.rows:
            message = to_message(row, topic)
            if self.tracer is not None:
                batch.spans.append(self._start_span(row, message))
            messages.append(message)
        self.broker.publish(messages)

    def _settle(self, batch: _Batch, published: Future[None]) -> int:
        """Wait for a batch's acknowledgement, then mark it; on failure roll it back."""
        try:
            published.result()
        except BaseException as exc:
            self._abort(batch, exc)
            raise
        return self._finish(batch)

    def _finish(self, batch: _Batch) -> int:
        try:
            batch.conn.execute(MARK, {"rows": [row.ctid for row, _ in batch.rows]})
            batch.conn.commit()
        except BaseException as exc:
            self._abort(batch, exc)
            raise
        self._end_spans(batch.spans, None)
        self.metrics.published.inc(len(batch.rows))
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        return len(batch.rows)

    def _abort(self, batch: _Batch, error: BaseException) -> None:
        if not batch.conn.closed:
            batch.conn.rollback()
        self._end_spans(batch.spans, error)

    def _route(self, rows: list[Row]) -> list[tuple[Row, str]]:
        """The rows with their topics, but none of an aggregate from its first unroutable row
        on: publishing later rows of it would break its order."""
        routed = []
        blocked: set[str] = set()
        for row in rows:
            if row.aggregate_id in blocked:
                continue
            topic = self.route(row)
            if topic is None:
                blocked.add(row.aggregate_id)
                if row.event_type not in self._unroutable_logged:
                    self._unroutable_logged.add(row.event_type)
                    log.error(
                        "relay: no contract names the topic of event type %r (row %s); "
                        "its aggregate waits until one does",
                        row.event_type,
                        row.id,
                    )
                continue
            routed.append((row, topic))
        return routed

    def _start_span(self, row: Row, message: Message) -> Any:
        from opentelemetry.trace import SpanKind

        from edaenv.outbox import tracing

        assert self.tracer is not None
        span = self.tracer.start_span(
            f"{message.topic} publish",
            context=tracing.parent_context(message.attributes),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": getattr(self.broker, "name", ""),
                "messaging.destination.name": message.topic,
                "messaging.message.id": message.attributes["id"],
                "messaging.message.conversation_id": row.aggregate_id,
                "edaenv.outbox.row": str(row.id),
            },
        )
        tracing.inject(span, message.attributes)
        return span

    def _end_spans(self, spans: list[Any], error: BaseException | None) -> None:
        if not spans:
            return
        from opentelemetry.trace import Status, StatusCode

        for span in spans:
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()

    def _connect(self) -> None:
        import psycopg

        if len(self._conns) != 2 or any(conn.closed for conn in self._conns):
            for conn in self._conns:
                conn.close()
            self._conns = tuple(
                psycopg.connect(
                    self.database_url, application_name="edaenv-relay", **DATABASE_OPTIONS
                )
                for _ in range(2)
            )
        if self._listen is None or self._listen.closed:
            self._listen = psycopg.connect(
                self.database_url,
                autocommit=True,
                application_name="edaenv-relay-listen",
                **DATABASE_OPTIONS,
            )
            self._listen.execute("LISTEN outbox")

    def _reset_if_broken(self) -> None:
        for conn in (*self._conns, self._listen):
            if conn is not None and (conn.closed or conn.broken):
                conn.close()

    def _wait(self) -> None:
        """Until a NOTIFY from the outbox trigger, or the polling interval."""
        assert self._listen is not None
        for _ in self._listen.notifies(timeout=self.options.poll_interval, stop_after=1):
            pass

    def _housekeeping(self) -> None:
        assert self._listen is not None
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.options.stats_every
            row = self._listen.execute(STATS).fetchone()
            if row is not None:
                self.metrics.backlog.set(row[0])
                self.metrics.oldest_age.set(row[1])
        if now >= self._next_retention:
            self._next_retention = now + self.options.retention_every
            self.delete_published()

    def delete_published(self) -> int:
        """Delete rows published longer ago than the retention, in chunks; how many."""
        assert self._listen is not None
        deleted = 0
        while not self._stop.is_set():
            cur = self._listen.execute(RETENTION, {"keep": self.options.retention, "limit": 5000})
            deleted += cur.rowcount
            if cur.rowcount < 5000:
                break
        return deleted
