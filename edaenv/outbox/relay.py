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

The pipeline (Relay.pump): PIPELINE batches are in flight at once, each of batch_size / PIPELINE
rows, in its own transaction on its own connection, and the steps run on three threads: the
claiming thread does 1-3 on a free connection; the publisher thread does 4 for one batch after
the other, in claim order; the marker thread does 5 for each batch once its acknowledgement is
in, on the batch's connection, which is then free for the next claim. No connection is used by
two threads at once: a batch's connection passes from the claim to the marker and back. A
failure anywhere stops the pipeline: the batches queued behind it are not published, and every
batch not yet committed is rolled back.

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
- A row is marked published only after the broker acked it, with the time of that
  acknowledgement. A crash between the ack and the commit publishes the batch again
  (duplicates, never losses); consumers deduplicate by event id. The batches in flight hold
  batch_size rows at most together, so a crash publishes at most batch_size rows again.
- A claim skips the aggregates that the relay's own batches in flight hold, exactly as it skips
  another relay's: the pipeline keeps per-aggregate order as several relays do.
- A row the relay cannot publish (no contract for its type, a payload breaking its contract,
  headers that are not an object, too large for the broker) is recorded in outbox_stuck (see
  stuck.py) and its aggregate is left out of the claims until the next retry: its later rows
  wait behind it, in order, and every other aggregate flows.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edaenv.events.envelope import message_from_outbox
from edaenv.names import shown
from edaenv.outbox import stuck
from edaenv.outbox.metrics import RelayMetrics
from edaenv.outbox.runtime import DATABASE_OPTIONS
from edaenv.outbox.stuck import Problem
from edaenv.outbox.tracing import Tracer

if TYPE_CHECKING:
    import psycopg

    from edaenv.brokers.base import Broker, Message
    from edaenv.events.contracts import Contract
    from edaenv.events.validate import Validator

log = logging.getLogger("edaenv.relay")

# First key of the two-int advisory locks: keeps the relay's locks apart from the application's.
LOCK_SPACE = 0x0ED0B0C5 - (1 << 31)

# Batches in flight at once in pump(), each of batch_size / PIPELINE rows on its own connection.
# More (smaller) batches were measured slower with bench/relay.py: every batch costs a claim, a
# mark, a commit and a broker request whatever its size.
PIPELINE = 2

# Steps 1-3 in one statement. The CTEs are materialized: each aggregate's lock is tried once,
# at one moment, and then all of its head rows are claimed in seq order, or none. Locks are
# tried oldest aggregate first, and only until a batch's worth is held. Rows are fetched again by
# ctid: a row updated meanwhile is followed to its newest version by FOR UPDATE and dropped, as
# published_at IS NULL no longer holds there. Aggregates held back by a stuck row (`blocked`,
# usually none) are left out of the head, so that they never fill it.
CLAIM = """
WITH head AS MATERIALIZED (
    SELECT ctid AS row, seq, aggregate_id FROM outbox
    WHERE published_at IS NULL AND aggregate_id <> ALL(%(blocked)s::text[])
    ORDER BY seq LIMIT %(scan)s
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
PENDING = """
SELECT EXISTS (
    SELECT 1 FROM outbox WHERE published_at IS NULL AND aggregate_id <> ALL(%(blocked)s::text[])
)
"""
# By ctid: the claim locked the rows, so their versions cannot move before this update.
# published_at is when the broker's acknowledgement arrived (not now(): the claim's time).
MARK = "UPDATE outbox SET published_at = %(acked)s WHERE ctid = ANY(%(rows)s::tid[])"
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
    retry_stuck: float = 10.0  # seconds before rows that could not be published are checked again


@dataclass(frozen=True)
class _Batch:
    conn: psycopg.Connection[Any]  # its transaction is open: rows and aggregates locked
    rows: list[tuple[Row, Destination]]  # the rows to publish, with where they go
    started: float
    spans: list[Any] = field(default_factory=list)  # started when the batch is published


class _Failure:
    """The first error of a pipeline: once there is one, no batch of it is published or marked
    any more (those that find it set raise CancelledError, a consequence, never recorded)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def set(self, error: BaseException) -> None:
        if self.error is None and not isinstance(error, CancelledError):
            self.error = error

    def is_set(self) -> bool:
        return self.error is not None


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


@dataclass(frozen=True)
class Destination:
    """Where a row goes, and what its message must be: with a contract, its full event type
    and dataschema are set on the message and its payload is checked against the schema."""

    topic: str
    type: str | None = None
    dataschema: str | None = None
    validator: Validator | None = None


# A row's destination; a bare topic (publish as it is); a Problem, or None for "no contract".
Route = Callable[[Row], "Destination | str | Problem | None"]


def contract_router(contracts: Sequence[Contract]) -> Route:
    """Each row's destination from the contracts: event_type `OrderPlaced.v1`, or `OrderPlaced`
    for its latest version (published as `OrderPlaced.v<latest>`)."""
    from edaenv.events.envelope import dataschema
    from edaenv.events.validate import Validator

    destinations: dict[str, Destination] = {}
    names: dict[str, list[str]] = {}
    for contract in sorted(contracts, key=lambda c: (c.event, c.version)):  # the latest last
        destination = Destination(
            contract.topic, contract.name, dataschema(contract), Validator(contract)
        )
        destinations[contract.name] = destinations[contract.event] = destination
        names.setdefault(contract.event, []).append(contract.name)

    def route(row: Row) -> Destination | Problem:
        return destinations.get(row.event_type) or _no_contract(row.event_type, names)

    return route


def _no_contract(event_type: str, names: dict[str, list[str]]) -> Problem:
    event = event_type.rpartition(".v")[0] or event_type
    if event in names:
        detail = (
            f"no contract for event type {shown(event_type)}: {event} has {', '.join(names[event])}"
        )
    else:
        every = [name for versions in names.values() for name in versions]
        detail = (
            f"no contract for event type {shown(event_type)}; contracts: "
            f"{', '.join(every) or 'none'}"
        )
    return Problem(
        "no-contract",
        detail,
        "set the row's event_type to a contract's (<Event> alone means its latest version), "
        "or add events/<Event>.v<N>.schema.json and restart the relay",
    )


def to_message(row: Row, target: Destination | str) -> Message:
    """The envelope `publish` uses, from the row's headers (CloudEvents attributes by name, as
    envelope.outbox_row writes them); attributes a hand-written row lacks, or holds as null,
    are completed from its columns, and other null headers are dropped. A contract's
    destination sets the full event type and the dataschema."""
    if isinstance(target, str):
        target = Destination(target)
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
    if target.type is not None:
        headers["type"] = target.type
    if target.dataschema is not None:
        headers["dataschema"] = target.dataschema
    return message_from_outbox(target.topic, row.aggregate_id, row.payload, headers)


def envelope_size(message: Message) -> int:
    """A message's size as `publish` counts it (body, key, attribute and header names and
    values); the relay keeps the same 512 bytes of room for the protocol's framing."""
    size = len(message.value) + len(message.key)
    for pairs in (message.attributes, message.headers):
        size += sum(map(len, pairs)) + sum(map(len, pairs.values()))
    return size


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
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._listen: psycopg.Connection[Any] | None = None
        self._contended = False
        self._topology_ready = False
        self._next_stats = 0.0
        self._next_retention = 0.0
        self._plain: dict[str, Destination] = {}  # bare topics from the route, wrapped once
        # Aggregates held back by a stuck row, left out of claims until _retry_at; and what is
        # recorded of each stuck row, so that a row found again unchanged is not written again.
        self._blocked: set[str] = set()
        self._retry_at = 0.0
        self._recorded: dict[str, Problem] = {}
        self._roomy = 0  # rows with fewer characters than this fit the broker for sure

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
                    hint = getattr(exc, "hint", None)
                    log.warning(
                        "relay: %s: %s (retrying in %.1fs)%s",
                        type(exc).__name__,
                        str(exc).strip(),
                        delay,
                        f"; hint: {hint}" if hint else "",
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

        The pipeline of the module docstring: this thread claims, the publisher thread
        publishes, the marker thread marks and commits, each on a batch of its own, so that a
        claim waits neither for a publish nor for a commit, and a publish for no database work.
        A new batch is claimed once a connection is free, i.e. once the oldest batch in flight
        is committed (or when one is free from the start). A batch is marked only after its own
        acknowledgement; the batches in flight hold batch_size rows at most together (a batch
        size below PIPELINE gives fewer, one-row batches). stop() ends the claims and every
        batch in flight is still published and marked. On a failure, no later batch is
        published, every batch in flight not yet committed is rolled back, and the first error
        is raised once none is left in flight."""
        self._ready()
        depth = min(PIPELINE, self.options.batch_size)
        part = self.options.batch_size // depth
        free = list(self._conns[:depth])
        inflight: deque[tuple[_Batch, Future[datetime], Future[int]]] = deque()
        failed = _Failure()  # set by whichever thread sees a failure first
        total = 0
        try:
            while not self._stop.is_set():
                if not free:
                    oldest, _, marked = inflight.popleft()
                    total += marked.result()
                    free.append(oldest.conn)
                batch = self._claim(free[-1], limit=part, scan=part * (1 + len(inflight)))
                if batch is None:
                    break
                free.pop()
                published = self._publisher.submit(self._publish, batch, failed)
                marked = self._marker.submit(self._settle, batch, published, failed)
                inflight.append((batch, published, marked))
            while inflight:
                total += inflight[0][2].result()
                inflight.popleft()
        except BaseException as exc:
            failed.set(exc)
            for _, published, _ in inflight:
                published.cancel()  # not started yet: never published, its marker rolls back
            wait([marked for _, _, marked in inflight])
            if isinstance(exc, CancelledError) and failed.error is not None:
                raise failed.error from None  # the cause, not a batch rolled back because of it
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
            # Every character of payload, headers and key taken as 4 bytes, and room to spare
            # for the attributes completed from the columns.
            self._roomy = (self.broker.max_message_bytes - 4096) // 4

    def close(self) -> None:
        for conn in (*self._conns, self._listen):
            if conn is not None and not conn.closed:
                conn.close()
        self._conns, self._listen = (), None
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        self._executors.clear()

    def _thread(self, name: str) -> ThreadPoolExecutor:
        """One thread doing one stage of the pipeline, in the order work was submitted."""
        if name not in self._executors:
            self._executors[name] = ThreadPoolExecutor(1, thread_name_prefix=f"relay-{name}")
        return self._executors[name]

    @property
    def _publisher(self) -> ThreadPoolExecutor:
        return self._thread("publish")

    @property
    def _marker(self) -> ThreadPoolExecutor:
        return self._thread("mark")

    def _claim(self, conn: psycopg.Connection[Any], limit: int, scan: int) -> _Batch | None:
        """Claim a batch on conn; its transaction stays open (locks held) when rows were
        claimed. Sets _contended when rows are pending that other transactions hold."""
        started = time.perf_counter()
        if self._blocked and time.monotonic() >= self._retry_at:
            self._blocked.clear()  # check the stuck rows again: corrected ones go out
        try:
            while True:
                blocked = list(self._blocked)
                with conn.cursor() as cur:
                    cur.execute(
                        CLAIM,
                        {"scan": scan, "space": LOCK_SPACE, "limit": limit, "blocked": blocked},
                    )
                    rows = [Row(*r) for r in cur.fetchall()]
                    if not rows:
                        pending = cur.execute(PENDING, {"blocked": blocked}).fetchone()
                        self._contended = pending == (True,)
                        conn.rollback()
                        return None
                self._contended = False
                routed = self._route(rows)
                if routed:
                    return _Batch(conn, routed, started)
                # Every row claimed is stuck: their aggregates are left out now, claim again.
                conn.rollback()
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise

    def _publish(self, batch: _Batch, failed: _Failure | None = None) -> datetime:
        """Publish a batch; when the broker acknowledged every message of it. Once a batch of
        the pipeline failed (`failed`), the batches queued behind it are not published."""
        if failed is not None and failed.is_set():
            raise CancelledError("another batch in flight failed")
        try:
            return self._send(batch)
        except BaseException as exc:
            if failed is not None:
                failed.set(exc)
            raise

    def _send(self, batch: _Batch) -> datetime:
        messages = []
        for row, destination in batch.rows:
            message = to_message(row, destination)
            if self.tracer is not None:
                batch.spans.append(self._start_span(row, message))
            messages.append(message)
        self.broker.publish(messages)
        return datetime.now(UTC)

    def _settle(
        self, batch: _Batch, published: Future[datetime], failed: _Failure | None = None
    ) -> int:
        """Wait for a batch's acknowledgement, then mark it and commit. On a failure, its own or
        (with `failed`) another batch's of the pipeline, roll it back instead."""
        try:
            acked = published.result()
            if failed is not None and failed.is_set():
                raise CancelledError("another batch in flight failed")
            batch.conn.execute(MARK, {"rows": [row.ctid for row, _ in batch.rows], "acked": acked})
            batch.conn.commit()
        except BaseException as exc:
            if failed is not None:
                failed.set(exc)
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

    def _route(self, rows: list[Row]) -> list[tuple[Row, Destination]]:
        """The rows with their destinations, but none of an aggregate from its first row that
        cannot be published on: publishing later rows of it would break its order. Such rows
        are recorded, and their aggregates left out of claims until the next retry."""
        routed = []
        found: list[tuple[Row, Problem]] = []
        route, plain, roomy = self.route, self._plain, self._roomy
        blocked, recorded = self._blocked, self._recorded
        for row in rows:
            if row.aggregate_id in blocked:
                continue
            target = route(row)
            if isinstance(target, str):
                target = plain.get(target) or plain.setdefault(target, Destination(target))
                # The usual case of a bare topic, checked inline: this loop is the hot path.
                if (
                    row.headers[:1] == "{"
                    and len(row.payload) + len(row.headers) + len(row.aggregate_id) <= roomy
                    and not recorded
                ):
                    routed.append((row, target))
                    continue
            checked = self._check(row, target)
            if isinstance(checked, Problem):
                if not blocked:
                    self._retry_at = time.monotonic() + self.options.retry_stuck
                blocked.add(row.aggregate_id)
                found.append((row, checked))
                continue
            if recorded:
                recorded.pop(row.id, None)  # corrected since: it goes out now
            routed.append((row, checked))
        if found:
            self._record(found)
        return routed

    def _check(self, row: Row, target: Destination | Problem | None) -> Destination | Problem:
        """The row's destination when it can be published as it is, else why not."""
        if target is None:
            return Problem(
                "no-contract",
                f"no contract names the topic of event type {shown(row.event_type)}",
                "add events/<Event>.v<N>.schema.json and restart the relay, or correct the "
                "row's event_type",
            )
        if isinstance(target, Problem):
            return target
        # jsonb as text: an object, and only an object, starts with '{'.
        if not row.headers.startswith("{"):
            return Problem(
                "bad-headers",
                f"headers must be a JSON object of CloudEvents attributes, got "
                f"{shown(row.headers)}",
                "set headers to an object, e.g. '{}' (the attributes are then completed from "
                "the row's columns)",
            )
        if target.validator is not None:
            problem = self._payload_problem(row, target.validator)
            if problem is not None:
                return problem
        if len(row.payload) + len(row.headers) + len(row.aggregate_id) > self._roomy:
            return self._size_problem(row, target) or target
        return target

    def _payload_problem(self, row: Row, validator: Validator) -> Problem | None:
        try:
            data = json.loads(row.payload)
        except ValueError as exc:
            return Problem(
                "invalid-payload", f"the payload is not JSON: {exc}", "store a JSON payload"
            )
        if validator.is_valid(data):
            return None
        # Only the failing row pays for the explanation.
        found = validator.violation(data)
        if found is None:
            return None
        contract = validator.contract
        return Problem(
            "invalid-payload",
            f"the payload breaks {contract.name} at {found.pointer or '/'}: {found.message} "
            f"(rule '{found.rule}')",
            f"correct the row's payload (the relay checks it again within "
            f"{self.options.retry_stuck:g}s), or the contract: "
            f"{contract.path.name}#{found.schema_pointer}",
            pointer=found.pointer,
            rule=found.rule,
        )

    def _size_problem(self, row: Row, target: Destination) -> Problem | None:
        size = envelope_size(to_message(row, target))
        limit = self.broker.max_message_bytes
        if size <= limit - 512:
            return None
        return Problem(
            "too-large",
            f"the event is {size} bytes with its envelope, more than "
            f"{getattr(self.broker, 'name', 'the broker')} accepts ({limit} bytes)",
            "store less in the event (a reference to the data, say): correct the row or "
            "delete it and write a smaller one",
        )

    def _record(self, found: list[tuple[Row, Problem]]) -> None:
        """Record newly stuck rows (those found again unchanged are not written again)."""
        new = [(row, p) for row, p in found if self._recorded.get(row.id) != p]
        if not new:
            return
        assert self._listen is not None
        stuck.record(self._listen, [(row.id, problem) for row, problem in new])
        for row, problem in new:
            self._recorded[row.id] = problem
            log.error(
                "relay: cannot publish outbox row %s (aggregate %s, event type %s): %s: %s; "
                "its aggregate's later rows wait behind it. hint: %s",
                row.id,
                shown(row.aggregate_id),
                shown(row.event_type),
                problem.reason,
                problem.detail,
                problem.hint,
            )

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

        if len(self._conns) != PIPELINE or any(conn.closed for conn in self._conns):
            for conn in self._conns:
                conn.close()
            self._conns = tuple(
                psycopg.connect(
                    self.database_url, application_name="edaenv-relay", **DATABASE_OPTIONS
                )
                for _ in range(PIPELINE)
            )
        if self._listen is None or self._listen.closed:
            self._listen = psycopg.connect(
                self.database_url,
                autocommit=True,
                application_name="edaenv-relay-listen",
                **DATABASE_OPTIONS,
            )
            self._listen.execute("LISTEN outbox")
            stuck.ensure_table(self._listen)

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
            for reason, count in stuck.counts(self._listen).items():
                self.metrics.stuck.labels(reason).set(count)
        if now >= self._next_retention:
            self._next_retention = now + self.options.retention_every
            self.delete_published()
            stuck.prune(self._listen)

    def stuck_report(self, limit: int = 50) -> stuck.Report:
        """The rows no relay could publish (recorded in outbox_stuck), oldest first."""
        self._connect()
        assert self._listen is not None
        return stuck.report(self._listen, limit)

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
