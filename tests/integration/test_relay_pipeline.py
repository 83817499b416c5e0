"""The relay's pipeline (several batches claimed, published and marked at once), against the
native PostgreSQL and a real Kafka broker (Tansu):

- the batches in flight together never hold more than batch_size rows, and more than one batch
  is in flight at a time (the overlap is real);
- a broker that dies mid-pipeline: the failing batch and every batch queued behind it are
  rolled back and never published, only acknowledged rows are marked, and no lock is left.

Every outbox row here is an aggregate of its own, so the relay's advisory locks held (one per
aggregate claimed) count the rows claimed and not yet committed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import psycopg
import pytest
from outbox_support import copy_events, event_row, fresh_database, make_broker, new_topic, own_tansu

from edaenv.brokers.base import Ack, Broker, Message
from edaenv.errors import BrokerError
from edaenv.outbox.relay import LOCK_SPACE, Options, Relay

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

BATCH = 12
ROWS = 60

HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2
  AND classid = (%(space)s::bigint & 4294967295)::oid
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
OPEN = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'edaenv-relay'
  AND state LIKE 'idle in transaction%%'
"""


class Watched:
    """The real broker, publishing through: records what each publish sent, how many rows the
    relay held claimed meanwhile, and which publishes the broker acknowledged. `before` runs
    before the n-th publish (1-based) reaches the broker."""

    def __init__(self, broker: Broker, url: str, before: dict[int, Any] | None = None):
        self.broker = broker
        self.name = broker.name
        self.max_message_bytes = broker.max_message_bytes
        self.watch = psycopg.connect(url, autocommit=True)
        self.before = before or {}
        self.sent: list[list[str]] = []  # event ids, per publish call
        self.held: list[int] = []  # rows claimed by the relay during each publish call
        self.acked: set[str] = set()

    def ensure_topology(self, topics: Sequence[str]) -> None:
        self.broker.ensure_topology(topics)

    def publish(self, messages: Sequence[Message]) -> list[Ack]:
        ids = [m.attributes["id"] for m in messages]
        self.sent.append(ids)
        time.sleep(0.05)  # the claiming thread fills the pipeline meanwhile
        [held] = self.watch.execute(HELD, {"space": LOCK_SPACE}).fetchall()
        self.held.append(held[0])
        if len(self.sent) in self.before:
            self.before[len(self.sent)]()
        acks = self.broker.publish(messages)
        self.acked.update(ids)
        return acks


def one_row_per_aggregate(url: str) -> list[str]:
    rows = [event_row(f"agg-{i:03d}", 0) for i in range(ROWS)]
    copy_events(url, rows)
    return [str(row[0]) for row in rows]


def relay_to(url: str, broker: Watched, topic: str) -> Relay:
    options = Options(batch_size=BATCH)
    return Relay(url, cast(Broker, broker), lambda row: topic, options, topics=[topic])


def marked(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT id::text FROM outbox WHERE published_at IS NOT NULL")
        return {row[0] for row in found}


def test_the_batches_in_flight_overlap_and_never_hold_more_than_batch_size_rows() -> None:
    topic = new_topic("pipeline")
    with fresh_database() as url:
        ids = one_row_per_aggregate(url)
        broker = Watched(make_broker(), url)
        relay = relay_to(url, broker, topic)
        try:
            assert relay.drain() == ROWS
        finally:
            relay.close()
            broker.watch.close()
        assert sorted(i for batch in broker.sent for i in batch) == sorted(ids)
        assert max(broker.held) <= BATCH
        assert max(broker.held) > max(len(batch) for batch in broker.sent), broker.held
        assert marked(url) == set(ids)


def test_a_broker_dying_mid_pipeline_rolls_back_every_batch_in_flight() -> None:
    topic = new_topic("pipeline")
    with own_tansu() as tansu, fresh_database() as url:
        ids = one_row_per_aggregate(url)

        def die() -> None:
            tansu.process.kill()
            tansu.process.wait()

        broker = Watched(make_broker(tansu.bootstrap), url, before={3: die})
        relay = relay_to(url, broker, topic)
        try:
            with pytest.raises(BrokerError):
                relay.pump()
            with psycopg.connect(url, autocommit=True) as conn:
                # Nothing claimed is left locked, no transaction of the relay left open.
                assert conn.execute(HELD, {"space": LOCK_SPACE}).fetchone() == (0,)
                assert conn.execute(OPEN).fetchone() == (0,)
        finally:
            relay.close()
            broker.watch.close()
        # The batches queued behind the failing one were never published.
        assert len(broker.sent) == 3
        first_two = {i for batch in broker.sent[:2] for i in batch}
        assert broker.acked == first_two
        # Only acknowledged rows are marked; the first batch was committed before the claims
        # that the pipeline's depth allowed only after it.
        done = marked(url)
        assert done <= broker.acked
        assert set(broker.sent[0]) <= done
        assert not done & set(broker.sent[2])
        assert len(done) < len(ids)
