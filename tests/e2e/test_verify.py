"""`edaenv verify` against real stacks: the scaffolded scenarios hold for the sample consumer on
every broker family, each kind of violation is caught in a deliberately broken consumer, and
bad input is refused before anything is injected or sent.

The three brokers' stacks come up and run their scenarios side by side (each stack is
independent; that keeps the file within minutes on a 2-core machine). The reports' text is
printed, so a CI log shows each scenario's figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_user_pytest
from tests.e2e.conftest import Result, Stack, claim_offset, use_images
from tests.e2e.verify_consumers import (
    ACK_FIRST,
    DROPS_POISON,
    NO_GUARD,
    OUT_OF_ORDER,
    Broken,
)

pytestmark = [pytest.mark.engine, pytest.mark.full_stack]

BROKERS = ("kafka", "rabbitmq", "nats")
SCENARIOS = ("consumer-crash", "relay-crash", "broker-restart", "poison", "duplicates", "partition")
COMPONENTS = ("postgres", "outbox", "consumer")
WITHOUT = ("--without=jaeger", "--without=prometheus", "--without=grafana")


def new_stack(factory: pytest.TempPathFactory, engine: Any, images: dict[str, str], broker: str):
    project = f"e2e-verify-{broker}-{uuid.uuid4().hex[:6]}"
    offset, slot = claim_offset()
    root = factory.mktemp(project)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    stack = Stack(root, project, broker, COMPONENTS, offset, engine, slot)
    init = stack.edaenv(
        "init",
        "--defaults",
        f"--broker={broker}",
        f"--name={project}",
        f"--port-offset={offset}",
        *WITHOUT,
    )
    assert init.code == 0, init.text
    use_images(stack, images)
    return stack


def sql(stack: Stack, query: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    dsn = stack.env()["EDAENV_DATABASE_URL"]
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.execute(query.encode(), params).fetchall()


def junit(path: Path) -> dict[str, dict[str, Any]]:
    """testcase name -> its time and failure text (None when it passed)."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        cases[case.get("name", "")] = {
            "time": float(case.get("time", "0")),
            "failure": None if failure is None else (failure.get("message") or failure.text),
        }
    return cases


# --- every scaffolded scenario holds on every broker ---------------------------------------------


@dataclass
class Verified:
    result: Result
    cases: dict[str, dict[str, Any]]  # from the JUnit report
    faults_after: list[Any]  # `inject status --json` afterwards
    healthy_after: bool


@pytest.fixture(scope="module")
def verified(
    tmp_path_factory: pytest.TempPathFactory, docker_engine: Any, stack_images: dict[str, str]
) -> dict[str, Verified]:
    """One stack per broker, each `up` once, then `edaenv verify` of every scenario on it; the
    three run at the same time, and are removed before the tests look at what they said."""
    stacks = [new_stack(tmp_path_factory, docker_engine, stack_images, b) for b in BROKERS]

    def verify(stack: Stack) -> Verified:
        up = stack.edaenv("up", "--timeout", "300", timeout=900)
        assert up.code == 0, up.text
        report = stack.root / "reports" / "verify.xml"
        result = stack.edaenv("verify", "--junit-xml", str(report), timeout=900)
        return Verified(
            result,
            junit(report) if report.exists() else {},
            json.loads(stack.edaenv("inject", "status", "--json").out),
            stack.status()["healthy"],
        )

    try:
        with ThreadPoolExecutor(len(stacks)) as pool:
            return dict(zip(BROKERS, pool.map(verify, stacks), strict=True))
    finally:
        for stack in stacks:
            stack.destroy()


@pytest.mark.parametrize("broker", BROKERS)
def test_every_scaffolded_scenario_holds_for_the_sample_consumer(
    verified: dict[str, Verified], broker: str
) -> None:
    found = verified[broker]
    result = found.result
    print(f"--- edaenv verify on {broker} ({result.seconds:.0f}s) ---\n{result.out}")
    print(", ".join(f"{name} {case['time']:.1f}s" for name, case in found.cases.items()))
    assert result.code == 0, result.text
    assert sorted(found.cases) == sorted(SCENARIOS)
    assert {name: case["failure"] for name, case in found.cases.items()} == dict.fromkeys(SCENARIOS)
    assert "✔ 6 scenario(s) held" in result.err
    # Every fault healed, and the stack healthy for what comes next.
    assert found.faults_after == [] and found.healthy_after is True


# --- verify can fail: a broken consumer per kind of violation (one broker is enough) -------------


@pytest.fixture(scope="module")
def kafka(
    tmp_path_factory: pytest.TempPathFactory, docker_engine: Any, stack_images: dict[str, str]
) -> Iterator[Stack]:
    stack = new_stack(tmp_path_factory, docker_engine, stack_images, "kafka")
    try:
        stack.up("--timeout", "300", timeout=900)
        consuming(stack)  # the group settled before the first broken consumer replaces it
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
def sample(kafka: Stack) -> Iterator[Stack]:
    """The kafka stack; the sample consumer's file as `init` wrote it again afterwards (the
    next test's `up` builds what it patched; no restart in between)."""
    main = kafka.scaffold / "consumer" / "main.py"
    original = main.read_text(encoding="utf-8")
    yield kafka
    main.write_text(original, encoding="utf-8")


PLUGIN_TESTS = """
def test_holds(edaenv_stack):
    [report] = edaenv_stack.verify("quick")
    assert report.ok and report.sent == 200 and report.processed == 200


def test_fails_with_the_violations(edaenv_stack):
    edaenv_stack.verify("doubled")
"""


def test_the_pytest_helper_returns_reports_and_fails_a_test_with_the_violations(
    sample: Stack,
) -> None:
    """`edaenv_stack.verify(...)` in a user's test, on the stack that is up (the plugin keeps
    what it did not start): a scenario that holds returns its report; one whose effects query
    counts every side effect twice fails the test, listing the duplicates."""
    scenarios = sample.scaffold / "scenarios"
    quick = "workload: {count: 200, aggregates: 10}\n"
    doubled = quick + (
        "check:\n  effects: SELECT event_id FROM order_confirmations "
        "UNION ALL SELECT event_id FROM order_confirmations\n"
    )
    (scenarios / "quick.yaml").write_text(quick)
    (scenarios / "doubled.yaml").write_text(doubled)
    tests = sample.root / "plugin_tests"
    tests.mkdir()
    (tests / "test_uses_verify.py").write_text(PLUGIN_TESTS)
    try:
        result = run_user_pytest(
            sample.root,
            tests,
            "--edaenv-config",
            str(sample.root / "edaenv.yaml"),
            env={"CI": "true"},
        )
    finally:
        (scenarios / "quick.yaml").unlink()
        (scenarios / "doubled.yaml").unlink()
    print(result.stdout[-3000:])
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "✘ doubled: 200 events sent, 200 processed, 400 side effects" in result.stdout
    assert "duplicate: event " in result.stdout and "2 effects" in result.stdout
    assert "Traceback" not in result.stdout
    assert sample.status()["healthy"] is True  # the plugin left the stack it did not start


def verify_broken(stack: Stack, broken: Broken, scenario: str) -> tuple[Result, dict[str, Any]]:
    """The scenario run against the broken consumer (built and started by `up`)."""
    broken.apply(stack.scaffold)
    stack.up("--timeout", "300", timeout=900)
    consuming(stack)
    result = stack.edaenv("verify", scenario, "--json", "--timeout", "15", timeout=600)
    print(f"--- {broken.name} ({broken.what}), {scenario} ---\n{result.err}")
    assert result.code == 1, result.text
    [report] = json.loads(result.out)["scenarios"]
    assert report["ok"] is False
    return result, report


def consuming(stack: Stack) -> None:
    """Wait until the consumer `up` restarted handles events (the Kafka group join takes a
    while): a crash before that would find nothing in flight to lose. On the Kafka stand-in
    (Tansu) a consumer recreated soon after another one sometimes never gets its partitions:
    restarted once then, and said so in the output."""
    [[before]] = sql(stack, "SELECT count(*) FROM processed_events")
    seeded = stack.edaenv("seed", "OrderPlaced", "-n", "1", "--via-outbox")
    assert seeded.code == 0, seeded.text
    started = time.monotonic()
    restarted = False
    while sql(stack, "SELECT count(*) FROM processed_events")[0][0] == before:
        waited = time.monotonic() - started
        if waited > 60 and not restarted:
            print(f"the consumer handled nothing in {waited:.0f}s: restarting it once")
            assert stack.edaenv("inject", "restart", "consumer").code == 0
            restarted = True
        if waited > 180:
            logs = stack.edaenv("logs", "consumer", "--tail", "40").text
            outbox = sql(stack, "SELECT count(*), count(published_at) FROM outbox")
            raise AssertionError(f"the consumer handles nothing; outbox {outbox}\n{logs}")
        time.sleep(0.5)


def kinds(report: dict[str, Any]) -> Counter[str]:
    return Counter(v["kind"] for v in report["violations"])


def injected(stack: Stack, scenario: str, action: str) -> int:
    from edaenv.verify.scenario import load_scenario

    loaded = load_scenario(stack.scaffold / "scenarios" / f"{scenario}.yaml")
    return sum(step.count or 1 for step in loaded.steps if step.action == action)


def test_a_consumer_without_idempotency_guard_fails_duplicates(sample: Stack) -> None:
    result, report = verify_broken(sample, NO_GUARD, "duplicates")
    count = injected(sample, "duplicates", "duplicate")
    assert count > 0 and kinds(report) == {"duplicate": count}
    # The database agrees: those events, and only those, have two side effects.
    twice = {v["event_id"] for v in report["violations"]}
    rows = sql(
        sample,
        "SELECT event_id, count(*) FROM order_confirmations WHERE event_id = ANY(%s) "
        "GROUP BY event_id",
        sorted(twice),
    )
    assert dict(rows) == dict.fromkeys(twice, 2)
    assert "duplicate" in result.err  # the violations are listed


def test_a_consumer_that_acknowledges_before_committing_loses_events_in_a_crash(
    sample: Stack,
) -> None:
    [[since]] = sql(sample, "SELECT now()")
    _, report = verify_broken(sample, ACK_FIRST, "consumer-crash")
    # Counted without verify: the events on the topic since the start that the consumer never
    # recorded (the workload publishes straight to the broker).
    tail = sample.edaenv("tail", "orders", "--no-follow", "--json", timeout=300)
    assert tail.code == 0, tail.text
    published = set()
    for line in tail.out.splitlines():
        attributes = json.loads(line)["attributes"]
        if datetime.fromisoformat(attributes["time"].replace("Z", "+00:00")) >= since:
            published.add(attributes["id"])
    handled = {
        row[0]
        for row in sql(
            sample,
            "SELECT event_id FROM processed_events WHERE event_id = ANY(%s)",
            sorted(published),
        )
    }
    missing = published - handled
    assert missing and kinds(report) == {"lost": len(missing)}
    assert {v["event_id"] for v in report["violations"]} == missing


def test_a_consumer_that_drops_what_it_cannot_parse_fails_poison(sample: Stack) -> None:
    _, report = verify_broken(sample, DROPS_POISON, "poison")
    count = injected(sample, "poison", "poison")
    assert count > 0 and kinds(report) == {"dead-letter": count}


def test_a_consumer_that_reorders_an_aggregates_events_fails_order(sample: Stack) -> None:
    [[since]] = sql(sample, "SELECT now()")
    _, report = verify_broken(sample, OUT_OF_ORDER, "relay-crash")
    # From the database: events handled after a later event of their own aggregate.
    rows = sql(
        sample,
        "SELECT o.aggregate_id, o.seq, p.seq FROM outbox o "
        "JOIN processed_events p ON p.event_id = o.id::text "
        "WHERE o.created_at >= %s ORDER BY p.seq",
        since,
    )
    late, newest = 0, {}
    for aggregate, sent, _processed in rows:
        if sent < newest.get(aggregate, 0):
            late += 1
        newest[aggregate] = max(newest.get(aggregate, 0), sent)
    assert late and kinds(report) == {"order": late}


# --- bad input: a located message, and nothing injected or sent ---------------------------------


def untouched(stack: Stack) -> tuple[Any, ...]:
    """What a verify that did nothing leaves as it was: the fault record, the outbox, the
    consumer's record, the topic's end."""
    record = stack.scaffold / ".generated" / "faults.json"
    [[outbox, processed]] = sql(
        stack, "SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM processed_events)"
    )
    tail = stack.edaenv("tail", "orders", "--no-follow", "--json")
    assert tail.code == 0, tail.text
    return (
        record.read_text() if record.exists() else None,
        outbox,
        processed,
        len(tail.out.splitlines()),
    )


def test_bad_scenarios_are_refused_before_anything_is_injected(sample: Stack) -> None:
    scenarios = sample.scaffold / "scenarios"
    before = untouched(sample)
    # A file that is not YAML, named after a good scenario: nothing runs, not even the first.
    (scenarios / "broken.yaml").write_text("name: broken\nworkload: {count: 10\n")
    try:
        bad = sample.edaenv("verify", "consumer-crash", "broken")
        assert bad.code == 2 and bad.out == "", bad.text
        assert f"{scenarios / 'broken.yaml'}:" in bad.err or "broken.yaml:" in bad.err, bad.err
        assert "Traceback" not in bad.err
    finally:
        (scenarios / "broken.yaml").unlink()
    unknown = sample.edaenv("verify", "consumer-crash", "no-such-scenario")
    assert unknown.code == 2 and "no-such-scenario" in unknown.err, unknown.text
    assert "consumer-crash" in unknown.err  # the hint lists what there is
    # A role the stack does not have: located at the step that names it.
    role = scenarios / "unknown-role.yaml"
    role.write_text(unknown_role_scenario(scenarios / "consumer-crash.yaml"))
    try:
        refused = sample.edaenv("verify", "unknown-role")
        assert refused.code == 2, refused.text
        assert "scenarios/unknown-role.yaml:" in refused.err, refused.err
        assert "no service 'grafana' in this stack" in refused.err
    finally:
        role.unlink()
    assert untouched(sample) == before


def unknown_role_scenario(model: Path) -> str:
    """The consumer-crash scenario acting on grafana, which this stack does not have."""
    text = model.read_text(encoding="utf-8")
    changed = text.replace("role: consumer", "role: grafana").replace(
        "consumer-crash", "unknown-role"
    )
    assert changed != text
    return changed


def test_ctrl_c_heals_what_the_run_broke(sample: Stack) -> None:
    import signal

    env = {**os.environ, "CI": "true", "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("EDAENV_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edaenv", "verify", "consumer-crash"],
        cwd=sample.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # until the fault is applied and not yet healed
        seen.append(line)
        if " kill consumer" in line:
            break
    assert any(" kill consumer" in line for line in seen), "".join(seen)
    from edaenv.faults.state import FaultStore

    assert FaultStore(sample.scaffold / ".generated").active() != []  # still broken
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(seen) + err
    assert json.loads(sample.edaenv("inject", "status", "--json").out) == []
    assert sample.status()["healthy"] is True


def test_a_stack_that_is_not_up_is_told_so_and_nothing_is_injected(make_stack: Any) -> None:
    stack = make_stack("kafka", COMPONENTS)
    result = stack.edaenv("verify")
    assert (result.code, result.out, result.err) == (
        1,
        "",
        f"error: stack '{stack.project}' is not up: broker, consumer, postgres, relay not "
        "running and healthy\n"
        "  hint: start it with `edaenv up`; `edaenv status` shows what runs\n",
    )
    assert not (stack.scaffold / ".generated" / "faults.json").exists()
