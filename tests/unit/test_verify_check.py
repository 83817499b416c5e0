"""The verify checker and its reports: each invariant caught when broken, exactly as many times
as it is broken, on generated runs; reports that parse whatever the event ids hold."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

from hypothesis import given, settings
from hypothesis import strategies as st

from edaenv.verify import report
from edaenv.verify.check import Processed, Report, Sent, Violation, check

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(aggregates: int, per_aggregate: int) -> tuple[list[Sent], list[Processed], list[str]]:
    """A perfect run: every event processed once, each aggregate in order, 10 ms after sent."""
    sent = [
        Sent(f"e{a}-{n}", f"a{a}", n, T0 + timedelta(milliseconds=n))
        for n in range(per_aggregate)
        for a in range(aggregates)
    ]
    processed = [
        Processed(s.event_id, order, s.sent_at + timedelta(milliseconds=10))
        for order, s in enumerate(sent)
    ]
    return sent, processed, [s.event_id for s in sent]


runs = st.tuples(st.integers(1, 8), st.integers(1, 12), st.randoms(use_true_random=False))


@settings(max_examples=200, deadline=None)
@given(shape=runs)
def test_a_perfect_run_holds(shape: tuple[int, int, random.Random]) -> None:
    aggregates, per, _ = shape
    sent, processed, effects = run(aggregates, per)
    result = check("s", sent, processed, effects, [])
    assert result.ok and result.violations == ()
    assert (result.sent, result.processed, result.effects) == (len(sent),) * 3
    assert result.age_ms == {"p50": 10.0, "p99": 10.0, "max": 10.0}


@settings(max_examples=200, deadline=None)
@given(shape=runs, k=st.integers(1, 5))
def test_k_missing_effects_are_k_lost(shape: tuple[int, int, random.Random], k: int) -> None:
    aggregates, per, rng = shape
    sent, processed, effects = run(aggregates, per)
    gone = set(rng.sample(effects, min(k, len(effects))))
    result = check("s", sent, processed, [e for e in effects if e not in gone], [])
    assert not result.ok
    assert {v.event_id for v in result.violations} == gone
    assert {v.kind for v in result.violations} == {"lost"}


@settings(max_examples=200, deadline=None)
@given(shape=runs, k=st.integers(1, 5), times=st.integers(2, 4))
def test_k_doubled_effects_are_k_duplicates(
    shape: tuple[int, int, random.Random], k: int, times: int
) -> None:
    aggregates, per, rng = shape
    sent, processed, effects = run(aggregates, per)
    doubled = rng.sample(effects, min(k, len(effects)))
    result = check("s", sent, processed, effects + doubled * (times - 1), [])
    assert [v.kind for v in result.violations] == ["duplicate"] * len(doubled)
    assert {v.detail for v in result.violations} == {f"{times} effects"}
    assert result.count("duplicate") == len(doubled)


@settings(max_examples=200, deadline=None)
@given(shape=runs)
def test_swapping_two_events_of_an_aggregate_is_one_order_violation(
    shape: tuple[int, int, random.Random],
) -> None:
    aggregates, per, rng = shape
    sent, processed, effects = run(aggregates, max(2, per))
    aggregate = f"a{rng.randrange(aggregates)}"
    first, second = sorted(
        rng.sample([s for s in sent if s.aggregate == aggregate], 2), key=lambda s: s.sequence
    )
    order = {p.event_id: p.order for p in processed}
    order[first.event_id], order[second.event_id] = order[second.event_id], order[first.event_id]
    swapped = [Processed(p.event_id, order[p.event_id], p.processed_at) for p in processed]
    result = check("s", sent, swapped, effects, [])
    # What came between the two is late relative to `second` too, or early relative to `first`.
    assert result.count("order") >= 1
    assert {v.aggregate for v in result.violations} == {aggregate}
    assert {v.kind for v in result.violations} == {"order"}


def test_order_violations_name_both_events() -> None:
    sent, processed, effects = run(1, 3)
    reordered = [Processed(p.event_id, 2 - p.order, p.processed_at) for p in processed]
    result = check("s", sent, reordered, effects, [])
    assert result.violations == (
        Violation("order", "e0-1", "a0", "event 1 processed after event 2"),
        Violation("order", "e0-0", "a0", "event 0 processed after event 2"),
    )


def test_redelivery_after_a_later_event_is_not_an_order_violation() -> None:
    """Only the first processing counts: a duplicate that the guard skipped changes nothing."""
    sent, processed, effects = run(1, 2)
    again = [*processed, Processed("e0-0", 99, T0)]
    assert check("s", sent, again, effects, []).ok


def test_without_an_effects_query_the_guard_records_decide() -> None:
    sent, processed, _ = run(2, 2)
    result = check("s", sent, processed[1:], None, [])
    assert [v.kind for v in result.violations] == ["lost"]
    assert result.violations[0].event_id == processed[0].event_id


def test_poison_must_be_dead_lettered_and_only_poison() -> None:
    sent, processed, effects = run(1, 2)
    poison = [Sent("p1", "", 0, T0, poison=True), Sent("p2", "", 0, T0, poison=True)]
    result = check("s", sent + poison, processed, effects, ["p1", "e0-0", "someone-else"])
    assert result.violations == (
        Violation("dead-letter", "p2", "", "not dead-lettered"),
        Violation("dead-letter", "e0-0", "a0", "valid event dead-lettered"),
    )
    assert (result.poison_sent, result.dead_letters) == (2, 2)


def test_not_quiet_fails_even_without_violations() -> None:
    sent, processed, effects = run(1, 1)
    result = check("s", sent, processed, effects, [], quiet=False)
    assert not result.ok and result.violations == ()


# --- reports -------------------------------------------------------------------------------


def failing() -> Report:
    sent, processed, effects = run(3, 5)
    return check(
        "consumer-crash",
        sent,
        processed,
        effects[2:] + effects[:1],
        [],
        faults=("kill consumer at 1.5s",),
        seconds=12.34,
    )


def test_text_lists_what_held_and_the_violations() -> None:
    assert report.text(failing()).splitlines() == [
        "✘ consumer-crash: 15 events sent, 14 processed, 14 side effects, 0 of 0 poison "
        "dead-lettered, 12.3s",
        "  faults: kill consumer at 1.5s",
        "  VIOLATED nothing lost: 1",
        "  held     one side effect per event",
        "  held     order per aggregate",
        "  held     poison dead-lettered, valid events not",
        "  age (sent to processed): p50 10.0 ms, p99 10.0 ms, max 10.0 ms",
        "  lost: event e1-0 of aggregate a1: never processed",
    ]


def test_text_shows_ten_violations_then_how_many_more() -> None:
    sent, processed, _ = run(4, 5)
    lines = report.text(check("s", sent, processed, [], [])).splitlines()
    assert sum(line.startswith("  lost: ") for line in lines) == 10
    assert lines[-1] == "  ... and 10 more (--json lists them all)"


def test_json_has_every_violation() -> None:
    document = report.as_json([failing()])
    assert document["ok"] is False
    [scenario] = document["scenarios"]
    assert scenario["violations_by_kind"] == {
        "lost": 1,
        "duplicate": 0,
        "order": 0,
        "dead-letter": 0,
    }
    assert scenario["violations"] == [
        {"kind": "lost", "event_id": "e1-0", "aggregate": "a1", "detail": "never processed"}
    ]
    json.dumps(document)


@settings(max_examples=200, deadline=None)
@given(event_id=st.text(max_size=20), scenario=st.text(min_size=1, max_size=10))
def test_junit_xml_parses_whatever_the_ids_hold(event_id: str, scenario: str) -> None:
    result = check(scenario, [Sent(event_id, "a", 0, T0)], [], [], [])
    good = check("fine", [], [], [], [])
    root = ElementTree.fromstring(report.junit_xml([result, good]).encode())
    [suite] = root
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    first, second = suite.findall("testcase")
    failure = first.find("failure")
    assert failure is not None and failure.get("message") == "1 lost"
    assert second.find("failure") is None
