"""The verify report as text, JSON and JUnit XML: exact output, and XML that always parses."""

from __future__ import annotations

import json
from xml.etree import ElementTree

from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.verify.check import KINDS, Report, Violation
from edaenv.verify.report import as_json, junit_xml, text


def report(
    violations: tuple[Violation, ...] = (), *, quiet: bool = True, name: str = "consumer-crash"
) -> Report:
    return Report(
        scenario=name,
        sent=1500,
        processed=1500 - sum(v.kind == "lost" for v in violations),
        effects=1500,
        poison_sent=3,
        dead_letters=3,
        violations=violations,
        age_ms={"p50": 12.5, "p99": 2100.0, "max": 3050.2},
        faults=("kill consumer at 1.5s (healed after 2s)",),
        seconds=9.25,
        quiet=quiet,
    )


def lost(n: int) -> tuple[Violation, ...]:
    return tuple(Violation("lost", f"e{i}", f"agg-{i % 3}", "never processed") for i in range(n))


def test_a_run_that_held_says_so_for_every_invariant() -> None:
    assert text(report()) == (
        "✔ consumer-crash: 1500 events sent, 1500 processed, 1500 side effects, "
        "3 of 3 poison dead-lettered, 9.2s\n"
        "  faults: kill consumer at 1.5s (healed after 2s)\n"
        "  held     nothing lost\n"
        "  held     one side effect per event\n"
        "  held     order per aggregate\n"
        "  held     poison dead-lettered, valid events not\n"
        "  age (sent to processed): p50 12.5 ms, p99 2100.0 ms, max 3050.2 ms"
    )


def test_violations_are_counted_and_the_first_ten_listed() -> None:
    violations = (*lost(11), Violation("duplicate", "d1", "agg-9", "3 effects"))
    lines = text(report(violations)).splitlines()
    assert lines[0].startswith("✘ consumer-crash: 1500 events sent, 1489 processed")
    assert lines[2:6] == [
        "  VIOLATED nothing lost: 11",
        "  VIOLATED one side effect per event: 1",
        "  held     order per aggregate",
        "  held     poison dead-lettered, valid events not",
    ]
    listed = [line for line in lines if line.startswith("  lost: ")]
    assert listed[0] == "  lost: event e0 of aggregate agg-0: never processed"
    assert len(listed) == 10
    assert lines[-1] == "  ... and 2 more (--json lists them all)"


def test_a_flow_that_never_became_quiet_fails_even_without_violations() -> None:
    busy = report(quiet=False)
    assert not busy.ok
    assert "  VIOLATED the flow became quiet in time (the consumer was still busy)" in (
        text(busy).splitlines()
    )
    case = ElementTree.fromstring(junit_xml([busy])).find("testsuite/testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == "the flow did not become quiet in time"


def test_json_has_stable_keys_and_every_violation() -> None:
    document = as_json([report(), report(lost(12), name="relay-crash")])
    assert json.loads(json.dumps(document)) == document
    assert document["ok"] is False
    first, second = document["scenarios"]
    assert list(first) == [
        "name",
        "ok",
        "quiet",
        "seconds",
        "sent",
        "processed",
        "effects",
        "poison_sent",
        "dead_letters",
        "violations_by_kind",
        "violations",
        "age_ms",
        "faults",
    ]
    assert first["ok"] is True and first["violations"] == []
    assert first["age_ms"] == {"p50": 12.5, "p99": 2100.0, "max": 3050.2}
    assert second["name"] == "relay-crash" and second["ok"] is False
    assert second["violations_by_kind"] == {kind: 12 * (kind == "lost") for kind in KINDS}
    assert len(second["violations"]) == 12
    assert second["violations"][0] == {
        "kind": "lost",
        "event_id": "e0",
        "aggregate": "agg-0",
        "detail": "never processed",
    }
    assert as_json([report()])["ok"] is True


def test_junit_has_one_case_per_scenario_and_a_failure_for_each_that_failed() -> None:
    xml = junit_xml([report(), report(lost(2), name="relay-crash")])
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    suite = ElementTree.fromstring(xml).find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == (
        "edaenv verify",
        "2",
        "1",
    )
    held, failed = suite.findall("testcase")
    assert held.get("name") == "consumer-crash" and held.find("failure") is None
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == "2 lost"
    assert "  lost: event e1 of aggregate agg-1: never processed" in (failure.text or "")


user_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20
)


@settings(max_examples=150, deadline=None)
@given(event_id=user_text, aggregate=user_text, detail=user_text)
@example(event_id="\x00\x1b[31m", aggregate="<a>&\"'", detail="]]>\ufffe\x7f")
@example(event_id="\r\n\t", aggregate="\x0b\x0c", detail="\U0001f600")
@example(event_id="\U00010000", aggregate="a", detail="d")
def test_junit_parses_whatever_the_event_ids_hold(
    event_id: str, aggregate: str, detail: str
) -> None:
    violation = Violation("order", event_id, aggregate, detail)
    root = ElementTree.fromstring(junit_xml([report((violation,), name=event_id)]).encode())
    case = root.find("testsuite/testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    # What XML can hold comes back unchanged; the rest is replaced, never dropped silently.
    assert len(case.get("name") or "") == len(event_id)
    # XML 1.0's Char production.
    holdable = all(
        c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
        for c in event_id
    )
    if holdable:
        assert case.get("name") == event_id
        # A parser reads a line end in element text as "\n" (XML 1.0 end-of-line handling).
        read = event_id.replace("\r\n", "\n").replace("\r", "\n")
        assert f"event {read} of aggregate" in failure.text
    else:
        assert "\ufffd" in (case.get("name") or "")
