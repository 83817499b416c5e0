"""Counts what a reliability test must: lost, duplicated, unexpected and out-of-order events.

Order is checked per aggregate after removing duplicates (a redelivery of an event already seen
is a duplicate, not an order violation): the first delivery of each event must come in the
order the producer committed that aggregate's events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edaenv.brokers.base import Delivery


@dataclass(frozen=True)
class Report:
    expected: int
    received: int
    lost: int
    duplicates: int
    unexpected: int
    order_violations: int
    wrong_keys: int

    def __str__(self) -> str:
        return (
            f"expected={self.expected} received={self.received} lost={self.lost} "
            f"duplicates={self.duplicates} unexpected={self.unexpected} "
            f"order_violations={self.order_violations} wrong_keys={self.wrong_keys}"
        )


def check(expected: Sequence[tuple[str, str, int]], received: Iterable[Delivery]) -> Report:
    """expected: (event id, aggregate id, position in the aggregate's commit order)."""
    wanted = {event_id: (aggregate, n) for event_id, aggregate, n in expected}
    seen: set[str] = set()
    last: dict[str, int] = {}
    count = duplicates = unexpected = violations = wrong_keys = 0
    for delivery in received:
        count += 1
        event_id = delivery.attributes.get("id", "")
        if event_id not in wanted:
            unexpected += 1
            continue
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        aggregate, n = wanted[event_id]
        if delivery.key != aggregate:
            wrong_keys += 1
        if last.get(aggregate, -1) > n:
            violations += 1
        last[aggregate] = max(n, last.get(aggregate, -1))
    return Report(
        expected=len(wanted),
        received=count,
        lost=len(wanted.keys() - seen),
        duplicates=duplicates,
        unexpected=unexpected,
        order_violations=violations,
        wrong_keys=wrong_keys,
    )
