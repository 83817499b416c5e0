"""Fault, replay and dead-letter commands report what the broker did, on every broker (Kafka via
Tansu, RabbitMQ, NATS JetStream; the native test services):

- an injected duplicate and a replayed dead letter reach a consumer, even inside NATS's
  duplicate window (the broker's de-duplication is bypassed on purpose), and a message the
  broker dropped as a duplicate is reported as dropped, never counted as sent;
- a broker that refuses the connection or accepts it and stays silent (as a paused one does)
  gives exit 3 and "cannot reach <broker> at <address>" from every broker command, within
  BOUND seconds; tested against listeners of the test's own, never the shared brokers;
- `dlq purge`, a replay removes what it re-sent, and counts equal their lists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from events_support import EDAENV, Project, make_project

from edaenv.brokers.base import Broker, Delivery, Endpoint, Message
from edaenv.brokers.registry import connect
from edaenv.outbox import dlq

BOUND = 5.0  # documented: the longest edaenv waits for a broker that does not answer
MARGIN = 3.0  # process start-up and imports on a loaded machine: a check, not a benchmark
BROKERS = [
    pytest.param("kafka", marks=pytest.mark.kafka),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("nats", marks=pytest.mark.nats),
]


def order(order_id: str | None = None) -> dict[str, Any]:
    return {"orderId": order_id or str(uuid.uuid4()), "customerId": "c-1", "total": 10.5}


def publish(project: Project, data: dict[str, Any] | None = None) -> str:
    out = project.ok("publish", "OrderPlaced", "--data", json.dumps(data or order()), "--json")
    event_id: str = json.loads(out)["id"]
    return event_id


def edaenv_json(project: Project, *args: str) -> Any:
    return json.loads(project.ok(*args, "--json"))


@pytest.fixture
def broker(event_project: Project) -> Iterator[Broker]:
    adapter = connect(Endpoint(event_project.broker, event_project.url))
    yield adapter
    adapter.close()


def delivered(project: Project, broker: Broker, expected: dict[str, int]) -> dict[str, int]:
    """How often a consumer, edaenv's own adapter, receives each event: until the expected
    copies came, then a quiet while in which more would show. (On RabbitMQ every subscriber
    shares the topic's queue: one call per test.)"""
    subscription = broker.subscribe(project.topic, f"truth-{uuid.uuid4().hex[:8]}")
    counts = dict.fromkeys(expected, 0)
    deadline, quiet_until = time.monotonic() + 90, None
    try:
        while quiet_until is None or time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, (counts, expected)
            for delivery in subscription.fetch(100, 0.5):
                event_id = delivery.attributes.get("id", "")
                if event_id in counts:
                    counts[event_id] += 1
                subscription.ack(delivery)
            if quiet_until is None and all(counts[k] >= n for k, n in expected.items()):
                quiet_until = time.monotonic() + 2.0
    finally:
        subscription.close()
    return counts


def event(project: Project, broker: Broker, event_id: str) -> Delivery:
    [found] = [
        d
        for d in broker.tail(project.topic, from_beginning=True, follow=False, idle_timeout=2.0)
        if d.attributes.get("id") == event_id
    ]
    return found


def dead_letter(project: Project, broker: Broker, delivery: Delivery) -> None:
    """What the consumer does when it gives up on an event."""
    now = datetime.now(UTC)
    headers = dlq.failure_headers(delivery, ValueError("total is missing"), 3, now, now)
    broker.publish_dead_letter(project.topic, delivery, headers)


def letters(project: Project) -> list[str]:
    return sorted(entry["id"] for entry in edaenv_json(project, "dlq", "list"))


# --- duplicates and replays reach the consumer ---------------------------------------------------


def test_injected_duplicate_reaches_the_consumer(event_project: Project, broker: Broker) -> None:
    event_id = publish(event_project)  # on NATS, inside the stream's duplicate window from now
    fault = edaenv_json(event_project, "inject", "duplicate", event_id, "--times", "2")
    text = event_project.run("inject", "duplicate", event_id)
    assert text.returncode == 0, text.stderr
    assert delivered(event_project, broker, {event_id: 4}) == {event_id: 4}
    assert fault["delivered"] == 2 and "dropped_as_duplicate" not in fault
    assert fault["summary"] == f"event {event_id} delivered 2 more time(s)"
    assert f"(event {event_id} delivered 1 more time(s)): fault " in text.stderr


def test_replayed_letter_reaches_the_consumer_and_leaves_the_queue(
    event_project: Project, broker: Broker
) -> None:
    event_id = publish(event_project)
    dead_letter(event_project, broker, event(event_project, broker, event_id))
    assert letters(event_project) == [event_id]

    replayed = edaenv_json(event_project, "dlq", "replay", event_id)
    assert delivered(event_project, broker, {event_id: 2}) == {event_id: 2}
    assert replayed == {
        "replayed": [event_id],
        "count": 1,
        "dropped_as_duplicate": [],
        "removed": 1,
    }
    assert letters(event_project) == []
    nothing = event_project.run("dlq", "replay", "--all")
    assert nothing.returncode == 0 and "no dead letters: nothing to replay" in nothing.stderr


def test_a_replay_that_fails_again_leaves_exactly_one_letter(
    event_project: Project, broker: Broker
) -> None:
    event_id = publish(event_project)
    subscription = broker.subscribe(event_project.topic, f"failing-{uuid.uuid4().hex[:8]}")
    failures = 0

    def consume_and_fail(until: int) -> None:
        """A consumer that gives up on the event every time it comes."""
        nonlocal failures
        deadline = time.monotonic() + 90
        while failures < until:
            assert time.monotonic() < deadline, f"only {failures} deliveries"
            for delivery in subscription.fetch(10, 0.5):
                if delivery.attributes.get("id") == event_id:
                    dead_letter(event_project, broker, delivery)
                    failures += 1
                subscription.ack(delivery)

    try:
        consume_and_fail(1)
        [first] = edaenv_json(event_project, "dlq", "list")
        assert edaenv_json(event_project, "dlq", "replay", "--all")["removed"] == 1
        consume_and_fail(2)
        [again] = edaenv_json(event_project, "dlq", "list")
        assert again["id"] == event_id and again["last_failure"] >= first["last_failure"]
        replayed = edaenv_json(event_project, "dlq", "replay", "--all")
        assert (replayed["count"], replayed["removed"]) == (1, 1)
        consume_and_fail(3)
        assert letters(event_project) == [event_id]
    finally:
        subscription.close()


def test_replay_counts_match_their_lists(event_project: Project, broker: Broker) -> None:
    twice, once = publish(event_project), publish(event_project)
    for event_id in (twice, twice, once):  # the first event failed on two deliveries
        dead_letter(event_project, broker, event(event_project, broker, event_id))
    assert letters(event_project) == sorted([twice, twice, once])

    replayed = edaenv_json(event_project, "dlq", "replay", "--all")
    assert sorted(replayed["replayed"]) == sorted([twice, once])
    assert replayed["count"] == len(replayed["replayed"]) == 2
    assert replayed["removed"] == 3 and replayed["dropped_as_duplicate"] == []
    assert letters(event_project) == []
    # Once more each: one replay per event, not per letter.
    assert delivered(event_project, broker, {twice: 2, once: 2}) == {twice: 2, once: 2}


def test_dlq_purge_by_id_and_all(event_project: Project, broker: Broker) -> None:
    ids = [publish(event_project) for _ in range(3)]
    for event_id in ids:
        dead_letter(event_project, broker, event(event_project, broker, event_id))
    dead_letter(event_project, broker, event(event_project, broker, ids[0]))  # failed twice

    neither = event_project.run("dlq", "purge")
    assert neither.returncode == 2 and "give either --id ID (repeatable) or --all" in neither.stderr
    both = event_project.run("dlq", "purge", "--all", "--id", ids[0])
    assert both.returncode == 2 and "Traceback" not in both.stderr
    unknown = event_project.run("dlq", "purge", "--id", "no-such-id")
    assert unknown.returncode == 2 and "no dead letter has the id 'no-such-id'" in unknown.stderr
    assert letters(event_project) == sorted([*ids, ids[0]])

    # Not on a terminal: no question asked, even without --yes.
    purged = edaenv_json(event_project, "dlq", "purge", "--id", ids[0], "--id", ids[1][:13])
    assert sorted(purged["purged"]) == sorted([ids[0], ids[0], ids[1]])
    assert purged["count"] == len(purged["purged"]) == 3
    assert letters(event_project) == [ids[2]]

    text = event_project.run("dlq", "purge", "--all")
    assert text.returncode == 0 and "purged 1 dead letter(s)" in text.stderr
    assert letters(event_project) == []
    assert edaenv_json(event_project, "dlq", "purge", "--all") == {"purged": [], "count": 0}
    assert edaenv_json(event_project, "dlq", "replay", "--all")["count"] == 0
    # What was purged is gone, not replayed: the consumer got each event once.
    assert delivered(event_project, broker, dict.fromkeys(ids, 1)) == dict.fromkeys(ids, 1)


@pytest.mark.nats
def test_dlq_purge_asks_on_a_terminal(tmp_path: Path) -> None:
    project = make_project(tmp_path, "nats")
    adapter = connect(Endpoint(project.broker, project.url))
    try:
        event_id = publish(project)
        dead_letter(project, adapter, event(project, adapter, event_id))
    finally:
        adapter.close()

    declined = on_terminal(project, ["dlq", "purge", "--all"], answer="n")
    assert (
        "Remove 1 dead letter(s) for good (y/n) [n]:" in declined and "nothing removed" in declined
    )
    assert letters(project) == [event_id]
    accepted = on_terminal(project, ["dlq", "purge", "--all"], answer="y")
    assert "purged 1 dead letter(s)" in accepted
    assert letters(project) == []


def on_terminal(project: Project, args: list[str], answer: str) -> str:
    """Run edaenv with a terminal for stdin and stdout; answer its question; return the screen."""
    env = {k: v for k, v in project.env.items() if k != "CI"}
    main, side = os.openpty()
    process = subprocess.Popen(
        [EDAENV, *args], cwd=project.root, env=env, stdin=side, stdout=side, stderr=side
    )
    os.close(side)
    screen, answered = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            if not answered and b"for good" in screen:
                os.write(main, answer.encode() + b"\n")
                answered = True
        assert process.wait(30) == 0, screen.decode()
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
    return re.sub(r"\x1b\[[0-9;]*m", "", screen.decode()).replace("\r", "")  # styles off


# --- a duplicate the broker drops is reported, not counted ---------------------------------------


def test_a_duplicate_the_broker_drops_is_reported_not_counted(
    event_project: Project, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edaenv.config import load_config
    from edaenv.faults import messages

    dedups = event_project.broker == "nats"  # JetStream: Nats-Msg-Id within the window
    broker.ensure_topology([event_project.topic])
    message = Message(
        event_project.topic,
        "k-1",
        b"{}",
        {"id": str(uuid.uuid4()), "type": "OrderPlaced.v1", "specversion": "1.0", "source": "/t"},
    )
    [first] = broker.publish([message])
    [second] = broker.publish([message])  # the normal path: the event id is the message id
    assert not first.duplicate and second.duplicate == dedups
    if dedups:
        assert second.position == first.position
    [own] = broker.publish([dataclasses.replace(message, dedup_id="a copy of its own")])
    assert not own.duplicate

    # Held events released twice (a heal racing its --for timer).
    monkeypatch.setenv("EDAENV_BROKER_URL", event_project.url)
    config = load_config(event_project.root / "edaenv.yaml")
    fault = messages.delay(config, 2)
    assert messages.release(config, fault) == "released 2 held events"
    assert messages.release(config, fault) == (
        f"released 0 held events; 2 dropped by {event_project.broker} as duplicates "
        "(released before)"
        if dedups
        else "released 2 held events"
    )

    # A replay of a letter whose removal did not happen (stale letters, re-sent again).
    event_id = publish(event_project)
    dead_letter(event_project, broker, event(event_project, broker, event_id))
    stale = dlq.read_dead_letters(broker, event_project.broker, [event_project.topic])
    assert dlq.replay(broker, stale) == dlq.Replayed([event_id], [], 1)
    again = dlq.replay(broker, stale)
    if dedups:
        assert again == dlq.Replayed([], [event_id], 0)
    else:
        assert again.replayed == [event_id] and again.dropped == []
    copies = 2 if dedups else 3  # the event, its replay, and the stale replay unless dropped
    assert delivered(event_project, broker, {event_id: copies}) == {event_id: copies}


# --- a broker that does not answer ---------------------------------------------------------------

COMMANDS = [
    ("publish", "OrderPlaced", "--data", json.dumps(order())),
    ("seed", "OrderPlaced", "--count", "1"),
    ("tail", "--no-follow"),
    ("dlq", "list"),
    ("dlq", "show", "some-id"),
    ("dlq", "replay", "--all"),
    ("dlq", "purge", "--all", "--yes"),
    ("inject", "duplicate", "some-id"),
    ("inject", "poison"),
    ("inject", "burst", "1"),
    ("inject", "reorder"),
    ("inject", "delay", "--by", "1m", "--count", "1"),
]


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never says a word: a paused broker, as a client
    sees it (its kernel still completes the handshake)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    server.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once closed


def url_at(broker: str, port: int) -> str:
    return {
        "kafka": f"127.0.0.1:{port}",
        "rabbitmq": f"amqp://u:p@127.0.0.1:{port}/%2F",
        "nats": f"nats://127.0.0.1:{port}",
    }[broker]


def check_every_command_cannot_reach(project: Project, port: int, bound: float) -> None:
    from edaenv.faults.state import FaultStore

    env = {"EDAENV_BROKER_URL": url_at(project.broker, port)}

    def timed(args: tuple[str, ...]) -> tuple[tuple[str, ...], float, Any]:
        started = time.monotonic()
        result = project.run(*args, env=env, timeout=60)
        return args, time.monotonic() - started, result

    with ThreadPoolExecutor(4) as pool:  # most of it is waiting for the silent port
        outcomes = list(pool.map(timed, COMMANDS))
    expected = f"cannot reach {project.broker} at 127.0.0.1:{port}"
    for args, elapsed, result in outcomes:
        command = " ".join(args[:2])
        assert result.returncode == 3, (command, result.stderr)
        assert f"error: {expected}\n" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr, command
        assert elapsed < bound, (command, f"{elapsed:.1f}s")
    store = FaultStore(project.root / "eda" / ".generated")
    assert store.active() == [] and store.history() == []  # no fault recorded


@pytest.mark.parametrize("name", BROKERS)
def test_a_silent_broker_is_reported_within_the_bound_by_every_command(
    name: str, tmp_path: Path, silent_listener: int
) -> None:
    check_every_command_cannot_reach(make_project(tmp_path, name), silent_listener, BOUND + MARGIN)


@pytest.mark.parametrize("name", BROKERS)
def test_a_refused_connection_is_reported_at_once_by_every_command(
    name: str, tmp_path: Path, closed_port: int
) -> None:
    check_every_command_cannot_reach(make_project(tmp_path, name), closed_port, MARGIN)
