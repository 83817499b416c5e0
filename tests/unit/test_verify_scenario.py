"""Scenario files: every mistake located, the shipped ones valid, and the loader and the published
JSON Schema agreeing on generated documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edaenv.errors import ConfigError, UsageError
from edaenv.verify.scenario import (
    ACTIONS,
    SCHEMA,
    Check,
    Step,
    Workload,
    find_scenarios,
    load_scenario,
)

SHIPPED = Path(__file__).resolve().parents[2] / "templates/scaffold/template/scenarios"


def write(tmp_path: Path, text: str, name: str = "s") -> Path:
    path = tmp_path / "scenarios" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_the_shipped_schema_is_the_loaders() -> None:
    shipped = json.loads((SHIPPED / "scenario.schema.json").read_text())
    assert shipped == json.loads(json.dumps(SCHEMA)), "regenerate scenario.schema.json"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_shipped_scenario_loads_and_points_editors_at_the_schema() -> None:
    scenarios = find_scenarios(SHIPPED, [])
    assert [s.name for s in scenarios] == [
        "broker-restart",
        "consumer-crash",
        "duplicates",
        "partition",
        "poison",
        "relay-crash",
    ]
    for scenario in scenarios:
        text = scenario.path.read_text()
        assert text.startswith("# yaml-language-server: $schema=./scenario.schema.json\n")
        jsonschema.validate(yaml.safe_load(text), SCHEMA)
        # ~20 s each at most on a 2-core machine: the workload's own length stays short.
        assert scenario.workload.count / scenario.workload.rate <= 6


def test_a_full_scenario_reads_exactly(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """description: all of it
workload: {event: OrderPlaced, via: outbox, count: 10, rate: 2.5, aggregates: 3}
steps:
  - {action: pause, role: relay, at: 500ms, lasting: 1.5m}
  - action: duplicate
    count: 4
    after_events: 7
check:
  consumer: mine
  effects: null
  quiet_timeout: 1h
""",
        name="all-of-it",
    )
    scenario = load_scenario(path)
    assert scenario.name == "all-of-it"
    assert scenario.description == "all of it"
    assert scenario.workload == Workload("OrderPlaced", "outbox", 10, 2.5, 3)
    assert scenario.steps == (
        Step("pause", "relay", at=0.5, lasting=90.0, where="scenarios/all-of-it.yaml:4"),
        Step("duplicate", count=4, after_events=7, where="scenarios/all-of-it.yaml:5"),
    )
    assert scenario.check == Check("mine", None, 3600.0)


def test_defaults() -> None:
    assert Check().effects == "SELECT event_id FROM order_confirmations"
    assert Workload() == Workload(None, "direct", 1000, 0.0, 50)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("workload: {}\nstep: []\n", "scenarios/s.yaml:2", "unknown key 'step' in the scenario"),
        ("workload: {cuont: 3}\n", "scenarios/s.yaml:1", "unknown key 'cuont' in 'workload'"),
        ("workload: {count: 0}\n", "scenarios/s.yaml:1", "'workload.count' must be a whole number"),
        (
            "workload: {count: 2.5}\n",
            "scenarios/s.yaml:1",
            "'workload.count' must be a whole number",
        ),
        ("workload: {via: kafka}\n", "scenarios/s.yaml:1", "workload.via must be direct or outbox"),
        ("workload: {rate: -1}\n", "scenarios/s.yaml:1", "'workload.rate' must be a number from 0"),
        ("description: x\n", "scenarios/s.yaml:1", "the scenario has no workload"),
        (
            "workload: {}\nsteps:\n  - {action: explode, role: relay, at: 1}\n",
            "scenarios/s.yaml:3",
            "step 1: action must be one of",
        ),
        (
            "workload: {}\nsteps:\n  - {action: kill, role: relay}\n",
            "scenarios/s.yaml:3",
            "step 1 needs exactly one of at",
        ),
        (
            "workload: {}\nsteps:\n  - {action: kill, role: relay, at: 1, after_events: 2}\n",
            "scenarios/s.yaml:3",
            "step 1 needs exactly one of at",
        ),
        (
            "workload: {}\nsteps:\n  - {action: kill, at: 1}\n",
            "scenarios/s.yaml:3",
            "step 1: kill needs a role",
        ),
        (
            "workload: {}\nsteps:\n  - {action: kill, role: brokr, at: 1}\n",
            "scenarios/s.yaml:3",
            "'steps[1].role' must be a role, got text 'brokr'",
        ),
        (
            "workload: {}\nsteps:\n  - {action: poison, at: 1}\n",
            "scenarios/s.yaml:3",
            "step 1: poison needs a count",
        ),
        (
            "workload: {}\nsteps:\n  - {action: poison, role: relay, count: 1, at: 1}\n",
            "scenarios/s.yaml:3",
            "step 1: poison takes no role",
        ),
        (
            "workload: {}\nsteps:\n  - {action: restart, role: broker, at: 1, lasting: 2}\n",
            "scenarios/s.yaml:3",
            "step 1: restart takes no lasting",
        ),
        (
            "workload: {}\nsteps:\n  - {action: kill, role: relay, count: 1, at: 1}\n",
            "scenarios/s.yaml:3",
            "step 1: kill takes no count",
        ),
        (
            "workload: {}\nsteps:\n  - {action: kill, role: relay, at: soon}\n",
            "scenarios/s.yaml:3",
            "'steps[1].at' must be a duration",
        ),
        (
            "workload: {}\nsteps:\n  -\n    action: kill\n    role: relay\n    at: 1\n"
            "    lasting: 0s\n",
            "scenarios/s.yaml:7",
            "'steps[1].lasting' must be a duration above 0",
        ),
        ("workload: {}\ncheck: {effects: ''}\n", "scenarios/s.yaml:2", "'check.effects' must be"),
        ("workload: {}\nworkload: {}\n", "scenarios/s.yaml:2", "key 'workload' is given twice"),
        ("workload: &w {}\n", "scenarios/s.yaml:1", "YAML anchors and aliases"),
        ("workload: {count: 3\n", "scenarios/s.yaml:2", "not valid YAML"),
        ("- workload\n", "scenarios/s.yaml:1", "the scenario must be a mapping"),
    ],
)
def test_bad_scenarios_are_refused_with_their_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_scenario(write(tmp_path, text))
    assert caught.value.where == where
    assert message in caught.value.message
    assert caught.value.hint


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_scenario(write(tmp_path, "workload: {cuont: 3}\n"))
    assert (caught.value.hint or "").startswith("did you mean 'count'?")


def test_unknown_and_missing_scenarios(tmp_path: Path) -> None:
    directory = tmp_path / "scenarios"
    with pytest.raises(UsageError) as caught:
        find_scenarios(directory, [])
    assert caught.value.message == f"no scenarios in {directory}"
    write(tmp_path, "workload: {}\n", name="consumer-crash")
    with pytest.raises(UsageError) as caught:
        find_scenarios(directory, ["consumer-crahs"])
    assert caught.value.message == f"no scenario 'consumer-crahs' in {directory}"
    assert caught.value.hint == "did you mean 'consumer-crash'? scenarios: consumer-crash"
    assert [s.name for s in find_scenarios(directory, ["consumer-crash"] * 2)] == ["consumer-crash"]


def test_a_file_name_that_is_no_scenario_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a name"):
        load_scenario(write(tmp_path, "workload: {}\n", name="Bad Name"))


# --- the loader and the schema agree -------------------------------------------------------

durations = st.one_of(
    st.integers(-2, 100),
    st.floats(-1, 100, allow_nan=False),
    st.sampled_from(["0s", "1s", "500ms", "1.5m", "2h", "0", "soon", "1 s", "-1s", "1.s"]),
)
numbers = st.one_of(
    st.integers(-3, 2_000_000),
    st.floats(-1, 2e6, allow_nan=False),
    st.booleans(),
    st.text(max_size=3),
)
steps = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(st.sampled_from(ACTIONS), st.text(max_size=5)),
        "role": st.one_of(
            st.sampled_from(["consumer", "relay", "grafana", "brokr", ""]), st.integers()
        ),
        "at": durations,
        "after_events": numbers,
        "lasting": durations,
        "count": numbers,
        "color": st.just("red"),
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "description": st.one_of(st.text(max_size=10), st.integers()),
        "workload": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "event": st.one_of(st.just("OrderPlaced"), st.just(""), st.none()),
                    "via": st.sampled_from(["direct", "outbox", "kafka"]),
                    "count": numbers,
                    "rate": numbers,
                    "aggregates": numbers,
                },
            ),
        ),
        "steps": st.one_of(st.lists(steps, max_size=3), st.none(), st.just("kill")),
        "check": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "consumer": st.one_of(st.just("x"), st.just(""), st.integers()),
                    "effects": st.one_of(st.none(), st.just("SELECT 1"), st.just("")),
                    "quiet_timeout": durations,
                },
            ),
        ),
    },
)


def _schema_says(document: Any) -> bool:
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(document)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents)
@example(document={"workload": {"count": 5.0}})
@example(document={"workload": {}, "steps": [{"action": "restart", "role": "b", "at": 0}]})
@example(document={"workload": {}, "steps": [{"action": "kill", "role": "b", "at": "0s"}]})
@example(document={"workload": {"event": None}})
def test_the_loader_accepts_exactly_what_the_schema_accepts(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    agree(tmp_path, document)


def agree(tmp_path: Path, document: dict[str, Any]) -> None:
    path = write(tmp_path, yaml.safe_dump(document))
    try:
        load_scenario(path)
        loaded = True
    except ConfigError:
        loaded = False
    assert loaded == _schema_says(document), document


# Documents near the grammar's edges: mostly valid, one value at a time off.
good_durations = st.one_of(st.integers(0, 100), st.sampled_from(["0s", "1s", "500ms", "1.5m"]))
container_steps = st.builds(
    lambda action, role, when, lasting: {"action": action, "role": role, **when, **lasting},
    st.sampled_from(["kill", "stop", "restart", "pause", "partition", "start", "unpause"]),
    st.sampled_from(["consumer", "relay", "broker"]),
    st.one_of(
        st.builds(lambda t: {"at": t}, good_durations),
        st.builds(lambda n: {"after_events": n}, st.integers(0, 5000)),
    ),
    st.one_of(st.just({}), st.builds(lambda t: {"lasting": t}, st.sampled_from([1, "2s", "0s"]))),
)
message_steps = st.builds(
    lambda action, count, when: {"action": action, "count": count, **when},
    st.sampled_from(["duplicate", "poison"]),
    st.integers(0, 50),
    st.one_of(
        st.builds(lambda t: {"at": t}, good_durations),
        st.builds(lambda n: {"after_events": n}, st.integers(-1, 5000)),
    ),
)
near_documents = st.builds(
    lambda workload, steps: {"workload": workload, "steps": steps},
    st.fixed_dictionaries(
        {},
        optional={
            "via": st.sampled_from(["direct", "outbox"]),
            "count": st.integers(0, 5000),
            "rate": st.one_of(st.integers(0, 500), st.floats(0, 500)),
            "aggregates": st.integers(0, 100),
        },
    ),
    st.lists(st.one_of(container_steps, message_steps), max_size=4),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=near_documents)
def test_the_loader_and_the_schema_agree_near_the_edges(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    agree(tmp_path, document)
