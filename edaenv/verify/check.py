"""What a verify run found: every event sent compared with what the consumer did with it.

Pure: the runner collects the records (edaenv/verify/run.py), this decides.
- lost: a valid event sent (acknowledged by the broker, or committed to the outbox) with no side
  effect (or, without an effects query, no record in the idempotency guard);
- duplicate: an event with more than one side effect;
- order: an event processed before an earlier event of its aggregate (by the guard's order);
- dead-letter: a poison message not dead-lettered, or a valid event dead-lettered;
and the age of each valid event when first processed (sent to processed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

KINDS = ("lost", "duplicate", "order", "dead-letter")


@dataclass(frozen=True)
class Sent:
    event_id: str
    aggregate: str
    sequence: int  # the event's place among its aggregate's events
    sent_at: datetime
    poison: bool = False


@dataclass(frozen=True)
class Processed:
    event_id: str
    order: int  # the guard's insertion order (processed_events.seq)
    processed_at: datetime


@dataclass(frozen=True)
class Violation:
    kind: str  # one of KINDS
    event_id: str
    aggregate: str
    detail: str


@dataclass(frozen=True)
class Report:
    scenario: str
    sent: int  # valid events sent
    processed: int  # of them, processed at least once
    effects: int  # side effects of this run's events (the guard's records without a query)
    poison_sent: int
    dead_letters: int  # this run's messages found in the dead letters
    violations: tuple[Violation, ...]
    age_ms: dict[str, float | None] = field(default_factory=dict)  # p50, p99, max
    faults: tuple[str, ...] = ()
    seconds: float = 0.0
    quiet: bool = True  # the flow became quiet before the timeout

    @property
    def ok(self) -> bool:
        return self.quiet and not self.violations

    def count(self, kind: str) -> int:
        return sum(v.kind == kind for v in self.violations)


def check(
    scenario: str,
    sent: Sequence[Sent],
    processed: Sequence[Processed],
    effects: Sequence[str] | None,
    dead_letter_ids: Sequence[str],
    *,
    faults: Sequence[str] = (),
    seconds: float = 0.0,
    quiet: bool = True,
) -> Report:
    valid = [s for s in sent if not s.poison]
    poison = [s for s in sent if s.poison]
    first: dict[str, Processed] = {}
    for record in sorted(processed, key=lambda p: p.order):
        first.setdefault(record.event_id, record)
    done = Counter(effects) if effects is not None else Counter(first.keys())
    dead = set(dead_letter_ids)
    violations: list[Violation] = []

    for event in valid:
        if not done[event.event_id]:
            violations.append(Violation("lost", event.event_id, event.aggregate, "never processed"))
        elif done[event.event_id] > 1:
            detail = f"{done[event.event_id]} effects"
            violations.append(Violation("duplicate", event.event_id, event.aggregate, detail))

    by_aggregate: dict[str, list[Sent]] = {}
    for event in valid:
        by_aggregate.setdefault(event.aggregate, []).append(event)
    for aggregate, events in by_aggregate.items():
        seen = [e for e in sorted(events, key=lambda e: e.sequence) if e.event_id in first]
        latest: Sent | None = None  # the event of this aggregate processed last so far
        for event in sorted(seen, key=lambda e: first[e.event_id].order):
            if latest is not None and event.sequence < latest.sequence:
                violations.append(
                    Violation(
                        "order",
                        event.event_id,
                        aggregate,
                        f"event {event.sequence} processed after event {latest.sequence}",
                    )
                )
            elif latest is None or event.sequence > latest.sequence:
                latest = event

    for event in poison:
        if event.event_id not in dead:
            violations.append(
                Violation("dead-letter", event.event_id, event.aggregate, "not dead-lettered")
            )
    for event in valid:
        if event.event_id in dead:
            detail = "valid event dead-lettered"
            violations.append(Violation("dead-letter", event.event_id, event.aggregate, detail))

    ages = sorted(
        max(0.0, (first[e.event_id].processed_at - e.sent_at).total_seconds() * 1000)
        for e in valid
        if e.event_id in first
    )
    ours = {e.event_id for e in sent}
    return Report(
        scenario=scenario,
        sent=len(valid),
        processed=sum(1 for e in valid if done[e.event_id]),
        effects=sum(n for event_id, n in done.items() if event_id in ours),
        poison_sent=len(poison),
        dead_letters=len(dead & ours),
        violations=tuple(violations),
        age_ms={
            "p50": _at(ages, 50),
            "p99": _at(ages, 99),
            "max": round(ages[-1], 1) if ages else None,
        },
        faults=tuple(faults),
        seconds=seconds,
        quiet=quiet,
    )


def _at(ordered: list[float], q: int) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, (len(ordered) * q) // 100)], 1)
