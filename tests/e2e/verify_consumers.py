"""Deliberately broken versions of the scaffold's sample consumer, for showing that
`edaenv verify` catches each kind of violation. Each is a text patch of eda/consumer/main.py as
`edaenv init` wrote it: (old, new) replacements, every `old` found exactly once, so that a change
of the sample consumer that moves the patched code fails loudly instead of testing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Broken:
    name: str
    what: str
    patches: tuple[tuple[str, str], ...]

    def apply(self, scaffold: Path) -> None:
        path = scaffold / "consumer" / "main.py"
        text = path.read_text(encoding="utf-8")
        for old, new in self.patches:
            assert text.count(old) == 1, f"{self.name}: {old!r} is not once in {path}"
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")


ORIGINAL = "unpatched"

NO_GUARD = Broken(
    "no-guard",
    "records the event ids but handles every delivery, seen before or not",
    (
        (
            "            handle(conn, [event for event_id, event in unique.items() "
            "if event_id in new])",
            "            handle(conn, events)  # BROKEN: no idempotency guard",
        ),
    ),
)

ACK_FIRST = Broken(
    "ack-first",
    "acknowledges a batch as soon as it is fetched and commits its side effects a fetch later",
    (
        (
            "            for delivery in deliveries:\n                subscription.ack(delivery)\n",
            "",
        ),
        (
            "            deliveries = subscription.fetch(self.batch, 1.0)\n",
            "            deliveries = subscription.fetch(self.batch, 1.0)\n"
            "            for delivery in deliveries:\n"
            "                subscription.ack(delivery)  # BROKEN: before the commit\n"
            "            deliveries, self.held = self.held, deliveries  # handled a fetch later\n",
        ),
        (
            "    healthy: bool = False",
            "    held: list = field(default_factory=list)\n    healthy: bool = False",
        ),
    ),
)

DROPS_POISON = Broken(
    "drops-poison",
    "acknowledges an event it cannot parse and drops it instead of dead-lettering it",
    (
        (
            "                self.dead_letter(delivery, error, attempts=1, first=None)\n",
            '                log.warning("dropped: %s", error)  # BROKEN: not dead-lettered\n',
        ),
    ),
)

OUT_OF_ORDER = Broken(
    "out-of-order",
    "handles each fetched batch last event first",
    (
        (
            "            unique = {event.event_id: event for event in events}",
            "            unique = {event.event_id: event for event in reversed(events)}  # BROKEN",
        ),
    ),
)
