"""Scenario files, `<scaffold>/scenarios/<name>.yaml`: a workload, a fault timeline, and how to
read what the consumer did. Every mistake is refused with its file:line before anything runs.

    description: The consumer is killed mid-run; nothing is lost or handled twice.
    workload: {via: direct, count: 1500, rate: 300, aggregates: 50}
    steps:
      - {action: kill, role: consumer, at: 2s, lasting: 3s}
    check: {quiet_timeout: 45s}

`SCHEMA` is the same grammar as a JSON Schema, for editors (the scaffold ships it next to the
scenarios); tests/unit/test_verify_scenario.py checks that the two agree on generated files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edaenv.errors import ConfigError, UsageError
from edaenv.located import KINDS, At, Document, did_you_mean, kind, parse
from edaenv.names import shown

CONTAINER_ACTIONS = ("kill", "stop", "restart", "pause", "partition", "start", "unpause")
MESSAGE_ACTIONS = ("duplicate", "poison")
ACTIONS = CONTAINER_ACTIONS + MESSAGE_ACTIONS
LASTING = ("kill", "stop", "pause", "partition")  # faults that a later heal undoes
# The roles `edaenv inject` acts on: every service a stack can have (Config.services); the
# runner then refuses a role the running stack lacks.
ROLES = ("broker", "postgres", "relay", "consumer", "jaeger", "prometheus", "grafana")
VIA = ("direct", "outbox")
MAX_COUNT = 1_000_000
MAX_RATE = 1_000_000
MAX_SECONDS = 86_400
SAMPLE_EFFECTS = "SELECT event_id FROM order_confirmations"
# A duration: seconds as a number, or digits with a unit (500ms, 10s, 1.5m, 1h).
_DURATION = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"
_POSITIVE = r"^(?=[0-9.]*[1-9])[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ANCHORS = "YAML anchors and aliases are not supported in scenarios"


@dataclass(frozen=True)
class Workload:
    event: str | None = None  # contract name (None: the stack's default contract)
    via: str = "direct"  # "direct" (publish to the broker) | "outbox" (rows in the outbox)
    count: int = 1000  # events
    rate: float = 0.0  # events per second; 0 = as fast as possible
    aggregates: int = 50  # distinct aggregate keys; an aggregate's events are numbered 0, 1, ...


@dataclass(frozen=True)
class Step:
    """One entry of the fault timeline."""

    action: str  # one of ACTIONS
    role: str | None = None  # the service a container action acts on
    at: float | None = None  # seconds after the workload starts, or
    after_events: int | None = None  # after this many events were sent (exactly one of them)
    lasting: float | None = None  # kill/stop/pause/partition: healed after this many seconds
    count: int | None = None  # duplicate: events re-delivered; poison: messages sent
    where: str = ""  # file:line of the step, for messages


@dataclass(frozen=True)
class Check:
    consumer: str = "order-placed-sample"  # processed_events.consumer: the guard's records
    effects: str | None = SAMPLE_EFFECTS  # one row per side effect, event id first; None: guard
    quiet_timeout: float = 45.0  # seconds to wait for the flow to become quiet


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    workload: Workload
    steps: tuple[Step, ...]
    check: Check


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
        {"type": "string", "pattern": _DURATION},
    ]
}
_POSITIVE_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
        {"type": "string", "pattern": _POSITIVE},
    ]
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edaenv verify scenario",
    "description": "A workload, a fault timeline and a check: `edaenv verify NAME` runs it.",
    "type": "object",
    "additionalProperties": False,
    "required": ["workload"],
    "properties": {
        "description": {"type": "string"},
        "workload": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "event": {"type": "string", "minLength": 1},
                "via": {"enum": list(VIA)},
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
                "rate": {"type": "number", "minimum": 0, "maximum": MAX_RATE},
                "aggregates": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
            },
        },
        "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}},
        "check": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "consumer": {"type": "string", "minLength": 1},
                "effects": {"type": ["string", "null"], "minLength": 1},
                "quiet_timeout": {"$ref": "#/$defs/positive"},
            },
        },
    },
    "$defs": {
        "duration": _DURATION_SCHEMA,
        "positive": _POSITIVE_SCHEMA,
        "step": {
            "type": "object",
            "additionalProperties": False,
            "required": ["action"],
            "properties": {
                "action": {"enum": list(ACTIONS)},
                "role": {"enum": list(ROLES)},
                "at": {"$ref": "#/$defs/duration"},
                "after_events": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
                "lasting": {"$ref": "#/$defs/positive"},
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
            },
            "oneOf": [{"required": ["at"]}, {"required": ["after_events"]}],
            "allOf": [
                {
                    "if": {"properties": {"action": {"enum": list(CONTAINER_ACTIONS)}}},
                    "then": {"required": ["role"], "not": {"required": ["count"]}},
                },
                {
                    "if": {"properties": {"action": {"enum": list(MESSAGE_ACTIONS)}}},
                    "then": {
                        "required": ["count"],
                        "not": {"anyOf": [{"required": ["role"]}, {"required": ["lasting"]}]},
                    },
                },
                {
                    "if": {
                        "required": ["lasting"],
                        "properties": {"action": {"enum": list(CONTAINER_ACTIONS)}},
                    },
                    "then": {"properties": {"action": {"enum": list(LASTING)}}},
                },
            ],
        },
    },
}


def find_scenarios(directory: Path, names: Sequence[str]) -> list[Scenario]:
    """The named scenarios of `directory` (all of them, by name, when none is named), each
    loaded and checked: a bad one fails before any runs."""
    there = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
    if not there:
        raise UsageError(
            f"no scenarios in {directory}",
            hint="`edaenv init` writes six there (consumer-crash, relay-crash, broker-restart, "
            "poison, duplicates, partition); docs/verify.md shows the format",
        )
    for name in names:
        if name not in there:
            raise UsageError(
                f"no scenario {shown(name)} in {directory}",
                hint=f"{did_you_mean(name, there)}scenarios: {', '.join(there)}",
            )
    return [load_scenario(directory / f"{name}.yaml") for name in dict.fromkeys(names or there)]


def load_scenario(path: Path) -> Scenario:
    from edaenv.config import read_utf8

    display = path.name if not path.parent.name else f"{path.parent.name}/{path.name}"
    if not _NAME.match(path.stem):
        raise ConfigError(
            f"scenario name {shown(path.stem)} is not a name",
            where=display,
            hint="name the file in lower case letters, digits and '-', e.g. consumer-crash.yaml",
        )
    text = read_utf8(path, where=display, hint="save the scenario as UTF-8")
    # A syntax error is told where YAML noticed it, as scenario messages always have.
    return _Reader(parse(text, display, anchors=_ANCHORS, where_noticed=True)).scenario(path)


class _Reader:
    """The scenario grammar over a located document: each value checked, each mistake told at
    its line."""

    def __init__(self, document: Document):
        self.data = document.data
        self.where = document.where
        self.fail = document.fail

    # --- values ---------------------------------------------------------------------------

    def mapping(self, value: Any, at: At, allowed: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(
                at,
                f"{_name(at)} must be a mapping, got {_kind(value)}",
                f"write `key: value` lines; keys: {', '.join(allowed)}",
            )
        for key in value:
            if str(key) not in allowed:
                raise self.fail(
                    (*at, str(key)),
                    f"unknown key {shown(str(key))} in {_name(at)}",
                    f"{did_you_mean(str(key), allowed)}keys: {', '.join(allowed)}",
                )
        return {str(k): v for k, v in value.items()}

    def integer(self, value: Any, at: At, low: int, high: int) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(
                at,
                f"{_name(at)} must be a whole number from {low} to {high}, got {_kind(value)}",
                f"write e.g. {_name(at).strip(chr(39))}: {max(low, 1)}",
            )
        return value

    def number(self, value: Any, at: At, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
            raise self.fail(
                at,
                f"{_name(at)} must be a number from 0 to {high:g}, got {_kind(value)}",
                "write e.g. 200 (0: as fast as possible)",
            )
        return float(value)

    def text(self, value: Any, at: At, hint: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(at, f"{_name(at)} must be a non-empty string, got {_kind(value)}", hint)
        return value

    def role(self, value: Any, at: At) -> str:
        if value not in ROLES:
            raise self.fail(
                at,
                f"{_name(at)} must be a role, got {_kind(value)}",
                f"{did_you_mean(str(value), ROLES)}roles: {', '.join(ROLES)}",
            )
        return str(value)

    def duration(self, value: Any, at: At, *, positive: bool) -> float:
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and re.match(_DURATION, value):
            number = re.match(r"^[0-9.]+", value)
            assert number is not None
            seconds = float(number.group()) * _UNITS[value[number.end() :] or "s"]
        if seconds is None or not 0 <= seconds <= MAX_SECONDS or (positive and seconds == 0):
            raise self.fail(
                at,
                f"{_name(at)} must be a duration{' above 0' if positive else ''}, "
                f"got {_kind(value)}",
                "write seconds (2, 0.5) or a number with a unit: 500ms, 10s, 1.5m, 1h",
            )
        return seconds

    # --- the document -----------------------------------------------------------------------

    def scenario(self, path: Path) -> Scenario:
        top = self.mapping(self.data, (), ("description", "workload", "steps", "check"))
        if "workload" not in top:
            raise self.fail((), "the scenario has no workload", "add `workload: {count: 1000}`")
        description = top.get("description", "")
        if not isinstance(description, str):
            raise self.fail(("description",), "description must be text", "quote it")
        steps_value = top.get("steps", [])
        if not isinstance(steps_value, list):
            raise self.fail(("steps",), "steps must be a list", "write `- {action: ...}` lines")
        return Scenario(
            name=path.stem,
            path=path,
            description=description,
            workload=self.workload(top["workload"]),
            steps=tuple(self.step(item, index) for index, item in enumerate(steps_value)),
            check=self.check(top["check"]) if "check" in top else Check(),
        )

    def workload(self, value: Any) -> Workload:
        at: At = ("workload",)
        fields = self.mapping(value, at, ("event", "via", "count", "rate", "aggregates"))
        default = Workload()
        via = fields.get("via", default.via)
        if via not in VIA:
            raise self.fail(
                (*at, "via"),
                f"workload.via must be direct or outbox, got {_kind(via)}",
                "direct: published to the broker; outbox: written to the outbox for the relay",
            )
        event = (
            self.text(fields["event"], (*at, "event"), "a contract name, e.g. OrderPlaced")
            if "event" in fields
            else None
        )
        return Workload(
            event=event,
            via=via,
            count=self.integer(fields.get("count", default.count), (*at, "count"), 1, MAX_COUNT),
            rate=self.number(fields.get("rate", default.rate), (*at, "rate"), MAX_RATE),
            aggregates=self.integer(
                fields.get("aggregates", default.aggregates), (*at, "aggregates"), 1, MAX_COUNT
            ),
        )

    def step(self, value: Any, index: int) -> Step:
        at: At = ("steps", index)
        keys = ("action", "role", "at", "after_events", "lasting", "count")
        fields = self.mapping(value, at, keys)
        where = self.where(at)
        action = fields.get("action")
        if action not in ACTIONS:
            raise self.fail(
                (*at, "action") if "action" in fields else at,
                f"step {index + 1}: action must be one of {', '.join(ACTIONS)}, "
                f"got {_kind(action)}",
                "container faults act on a role (kill, stop, restart, pause, partition, start, "
                "unpause); duplicate and poison act on messages",
            )
        if ("at" in fields) == ("after_events" in fields):
            raise self.fail(
                at,
                f"step {index + 1} needs exactly one of at (seconds after the start) and "
                "after_events (events sent)",
                "write e.g. `at: 2s` or `after_events: 500`",
            )
        message = action in MESSAGE_ACTIONS
        for key, wrong in (
            ("role", message),
            ("lasting", message or action not in LASTING),
            ("count", not message),
        ):
            if key in fields and wrong:
                raise self.fail(
                    (*at, key),
                    f"step {index + 1}: {action} takes no {key}",
                    "role and lasting are for container faults (lasting: kill, stop, pause, "
                    "partition), count for duplicate and poison",
                )
        if message and "count" not in fields:
            raise self.fail(at, f"step {index + 1}: {action} needs a count", "add `count: 10`")
        if not message and "role" not in fields:
            raise self.fail(
                at,
                f"step {index + 1}: {action} needs a role",
                f"add e.g. `role: consumer`; roles: {', '.join(ROLES)}",
            )
        return Step(
            action=action,
            role=self.role(fields["role"], (*at, "role")) if "role" in fields else None,
            at=self.duration(fields["at"], (*at, "at"), positive=False) if "at" in fields else None,
            after_events=self.integer(fields["after_events"], (*at, "after_events"), 0, MAX_COUNT)
            if "after_events" in fields
            else None,
            lasting=self.duration(fields["lasting"], (*at, "lasting"), positive=True)
            if "lasting" in fields
            else None,
            count=self.integer(fields["count"], (*at, "count"), 1, MAX_COUNT)
            if "count" in fields
            else None,
            where=where,
        )

    def check(self, value: Any) -> Check:
        at: At = ("check",)
        fields = self.mapping(value, at, ("consumer", "effects", "quiet_timeout"))
        default = Check()
        effects = fields.get("effects", default.effects)
        if effects is not None:
            effects = self.text(
                effects,
                (*at, "effects"),
                "a SELECT whose first column is the event id of each side effect, or null",
            )
        return Check(
            consumer=self.text(
                fields.get("consumer", default.consumer),
                (*at, "consumer"),
                "the consumer name your consumer records in processed_events",
            ),
            effects=effects,
            quiet_timeout=self.duration(
                fields.get("quiet_timeout", default.quiet_timeout),
                (*at, "quiet_timeout"),
                positive=True,
            ),
        )


def _name(at: At) -> str:
    parts = [str(p) if isinstance(p, str) else f"[{p + 1}]" for p in at]
    return "'" + ".".join(parts).replace(".[", "[") + "'" if parts else "the scenario"


# The words scenario messages use: "got a number 3", "got text 'brokr'".
_KINDS = {**KINDS, int: "a number", str: "text"}


def _kind(value: Any) -> str:
    return kind(value, names=_KINDS, quote=shown)
