"""Running a scenario against a stack: the workload, the fault timeline, the wait until the
consumer is done, and what the database and the dead letters say happened.

Everything goes through the application layer (publishing, the Stack's broker and database) and
the code `edaenv inject` runs (faults.containers, faults.service, faults.messages). Every fault a
run applies is healed before `run` returns, also when it fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edaenv.application import Stack
from edaenv.errors import BrokerError, EdaenvError, EngineError, UsageError
from edaenv.names import shown
from edaenv.verify.check import Processed, Sent, check

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker
    from edaenv.events.contracts import Contract
    from edaenv.faults.state import Fault
    from edaenv.verify.check import Report
    from edaenv.verify.scenario import Scenario, Step
    from edaenv.wire import Message

Progress = Callable[[str], None]

CONTAINER_FAULTS = ("kill", "stop", "pause", "partition")
REPAIRS = ("start", "unpause")
MESSAGE_FAULTS = ("duplicate", "poison")
# The consumer is done when nothing changed for this long (its fetch waits 1 s when idle).
SETTLE = 3.0
POLL = 0.5
# How long a workload keeps re-sending a window the broker or the database refused.
RESEND_FOR = 120.0
# Seconds the healed services get to be healthy again before the next scenario.
HEALTHY_TIMEOUT = 180.0


def _nothing(_line: str) -> None:
    pass


# --- before anything runs -------------------------------------------------------------------


def preflight(stack: Stack, scenarios: Sequence[Scenario]) -> None:
    """Everything that can be checked before a fault is injected or an event sent: the roles
    the steps name, the services the scenarios need (running), the broker and the database (the
    processed_events order column, each scenario's effects query), no fault already active."""
    config = stack.config
    services = config.services()
    for scenario in scenarios:
        stack.contract(scenario.workload.event, where=f"{scenario.path}: workload.event")
        for step in scenario.steps:
            if step.role is not None and step.role not in services:
                raise UsageError(
                    f"no service {shown(step.role)} in this stack",
                    where=step.where,
                    hint=f"services of '{config.project}': {', '.join(services)}",
                )
    needed = {"broker", "postgres", "consumer"}
    if any(s.workload.via == "outbox" for s in scenarios):
        needed.add("relay")
    missing = sorted(needed - set(services))
    if missing:
        raise UsageError(
            f"verify needs {', '.join(missing)} in the stack, and edaenv.yaml has none",
            where=str(config.path),
            hint="add the components (`edaenv init --force` asks for them), then `edaenv up`",
        )
    _running(stack, sorted(needed))
    from edaenv.faults import service

    active = service.store(config).active()
    if active:
        raise UsageError(
            f"the stack has {len(active)} active fault(s): verify starts from a healthy stack",
            hint="`edaenv inject status` lists them; `edaenv inject heal --all` undoes them",
        )
    broker = stack.broker()
    broker.close()
    with stack.database() as conn:
        _check_order_column(conn)
        for scenario in scenarios:
            if scenario.check.effects is not None:
                _effects(conn, scenario, limit=0)


def _running(stack: Stack, roles: list[str]) -> None:
    from edaenv.engine import api
    from edaenv.engine.watch import snapshot

    ready = {s.service for s in snapshot(api.connect(), stack.config.project) if s.ready}
    down = [role for role in roles if role not in ready]
    if down:
        raise EngineError(
            f"stack '{stack.config.project}' is not up: {', '.join(down)} not running and healthy",
            hint="start it with `edaenv up`; `edaenv status` shows what runs",
        )


def _check_order_column(conn: Any) -> None:
    found = conn.execute(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_name = 'processed_events' AND column_name = 'seq'"
    ).fetchone()
    if found is None:
        raise UsageError(
            "processed_events has no seq column: verify cannot tell in which order the "
            "consumer processed the events",
            hint="apply db/migrations/004_processed_order.sql of the scaffold to the stack's "
            "database (a fresh volume gets it: `edaenv down --volumes`, `edaenv up`)",
        )


def _effects(conn: Any, scenario: Scenario, *, limit: int | None = None) -> list[str]:
    """The first column of the scenario's effects query, as text (LIMIT 0: only checked)."""
    import psycopg

    sql = str(scenario.check.effects)
    wrapped = f"SELECT * FROM ({sql}) AS effects" + (f" LIMIT {limit}" if limit is not None else "")
    try:
        with conn.transaction():
            rows = conn.execute(wrapped.encode()).fetchall()
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"the effects query fails: {message}",
            where=f"{scenario.path}: check.effects",
            hint="a SELECT whose first column is the event id of each side effect, e.g. "
            "SELECT event_id FROM order_confirmations",
        ) from None
    return [str(row[0]) for row in rows]


# --- one run --------------------------------------------------------------------------------


@dataclass
class _Applied:
    """A fault this run applied and has not healed yet."""

    step: Step
    role: str
    fault: Fault
    heal_at: float | None  # seconds after the start, for `lasting`


@dataclass
class _Run:
    stack: Stack
    scenario: Scenario
    contract: Contract
    progress: Progress
    started: float = field(default_factory=time.monotonic)
    sent: list[Sent] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    applied: list[_Applied] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)  # what happened, for the report

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def timed(self) -> bool:
        """Whether a fault waits for its `lasting` to run out."""
        return any(a.heal_at is not None for a in self.applied)

    def say(self, text: str) -> None:
        self.progress(f"{self.elapsed():5.1f}s {text}")


def run(
    stack: Stack,
    scenario: Scenario,
    *,
    progress: Progress = _nothing,
    quiet_timeout: float | None = None,
) -> Report:
    """Send the workload while the steps break the stack, heal everything, wait until the
    consumer is done (or `quiet_timeout`, default the scenario's), and check what it did."""
    contract = stack.contract(scenario.workload.event, where=f"{scenario.path}: workload.event")
    state = _Run(stack, scenario, contract, progress)
    timeout = scenario.check.quiet_timeout if quiet_timeout is None else quiet_timeout
    try:
        _workload(state)
    except BaseException:  # Ctrl-C included: nothing this run broke stays broken
        _heal_everything(state, strict=False)
        raise
    _heal_everything(state, strict=True)
    quiet = _wait_quiet(state, timeout)
    processed, effects, dead = _collect(state)
    return check(
        scenario.name,
        state.sent,
        processed,
        effects,
        dead,
        faults=tuple(state.faults),
        seconds=state.elapsed(),
        quiet=quiet,
    )


def _messages(state: _Run) -> tuple[list[Message], list[tuple[str, int]]]:
    """The workload's events, generated as `edaenv seed` does and validated against the
    contract; each event's aggregate id (the contract's key, so the message key) is one of
    `aggregates` fresh ids, and its sequence number counts that aggregate's events from 0."""
    from edaenv.application.publishing import generated, prepare

    workload = state.scenario.workload
    aggregates = [str(uuid.uuid4()) for _ in range(max(1, workload.aggregates))]
    keys: list[str] = []
    items = []
    for number, (where, data) in enumerate(generated(state.contract, workload.count, None)):
        key = aggregates[number % len(aggregates)]
        if isinstance(data, dict):
            data[state.contract.key] = key
        keys.append(key)
        items.append((where, data))
    batch = prepare(state.stack.config, state.contract, items)
    counts: dict[str, int] = {}
    order = []
    messages = []
    for message, key in zip(batch.messages, keys, strict=True):
        # A contract whose key the generated data does not carry: the aggregate is the key.
        messages.append(message if message.key == key else _rekeyed(message, key))
        order.append((key, counts.get(key, 0)))  # an aggregate's events: 0, 1, 2, ...
        counts[key] = counts.get(key, 0) + 1
    state.ids = {m.attributes["id"] for m in messages}
    return messages, order


def _rekeyed(message: Message, key: str) -> Message:
    import dataclasses

    return dataclasses.replace(message, key=key, attributes={**message.attributes, "subject": key})


def _workload(state: _Run) -> None:
    from edaenv.application.publishing import Batch, first_interrupt_stops, write_outbox

    scenario, stack = state.scenario, state.stack
    workload = scenario.workload
    messages, order = _messages(state)
    rate = workload.rate
    window = max(1, min(500, int(rate / 20) or 1)) if rate else 500
    steps = sorted(
        scenario.steps,
        key=lambda s: (s.at if s.at is not None else float("inf"), s.after_events or 0),
    )
    pending = list(steps)
    state.say(
        f"sending {len(messages)} {state.contract.name} events via {workload.via}"
        + (f" at {rate:g}/s" if rate else "")
        + f" over {workload.aggregates} aggregates"
    )
    position = 0
    failing_since: float | None = None
    retry_at = 0.0
    broker: Broker | None = None
    # Ctrl-C is taken between windows, as `seed` does: one inside librdkafka's flush surfaces
    # as a SystemError, not as the KeyboardInterrupt that heals and exits 130.
    with contextlib.ExitStack() as cleanup:
        interrupted = cleanup.enter_context(first_interrupt_stops())
        cleanup.callback(lambda: _close(broker) if broker is not None else None)
        while position < len(messages) or pending or state.timed():
            if interrupted.is_set():
                raise KeyboardInterrupt
            now = state.elapsed()
            for step in [s for s in pending if _due(s, now, position, len(messages))]:
                pending.remove(step)
                _apply(state, step)
            for applied in [a for a in state.applied if a.heal_at is not None and a.heal_at <= now]:
                _heal(state, applied.role, f"after {applied.step.lasting:g}s")
            wake = _next_due(state, pending)
            if position >= len(messages):
                time.sleep(min(POLL, max(0.01, wake - state.elapsed())))
                continue
            wait = max(position / rate if rate else 0.0, retry_at) - state.elapsed()
            if wait > 0:
                time.sleep(min(wait, POLL, max(0.01, wake - state.elapsed())))
                continue
            chunk = messages[position : position + window]
            try:
                if workload.via == "direct":
                    if broker is None:
                        broker = stack.broker()
                        broker.ensure_topology([state.contract.topic])
                    acks = broker.publish(chunk)
                    at = datetime.now(UTC)
                    stored = {
                        m.attributes["id"]
                        for m, a in zip(chunk, acks, strict=True)
                        if not a.duplicate
                    }
                else:
                    fresh = _not_in_outbox(stack, chunk) if failing_since is not None else chunk
                    write_outbox(stack, Batch(state.contract, fresh))
                    at = datetime.now(UTC)
                    stored = {m.attributes["id"] for m in chunk}
            except BrokerError as exc:
                if failing_since is None:
                    failing_since = state.elapsed()
                    state.say(f"not acknowledged: {exc.message}; sending again every second")
                elif state.elapsed() - failing_since > RESEND_FOR:
                    raise
                retry_at = state.elapsed() + 1.0
                if broker is not None:
                    _close(broker)
                    broker = None
                continue
            if failing_since is not None:
                state.say("acknowledged again")
                failing_since = None
            for offset, message in enumerate(chunk):
                if message.attributes["id"] in stored:
                    key, sequence = order[position + offset]
                    state.sent.append(Sent(message.attributes["id"], key, sequence, at))
            position += len(chunk)
        state.say(f"sent {sum(not s.poison for s in state.sent)} events")


def _close(broker: Broker) -> None:
    with contextlib.suppress(EdaenvError):  # a broker that went away: nothing left to close
        broker.close()


def _not_in_outbox(stack: Stack, chunk: Sequence[Message]) -> list[Message]:
    """After a failed write: the commit may have happened before the connection broke, so the
    rows already there are not written twice (their ids are the primary key)."""
    ids = [m.attributes["id"] for m in chunk]
    with stack.database() as conn:
        rows = conn.execute("SELECT id::text FROM outbox WHERE id = ANY(%s::uuid[])", [ids])
        there = {row[0] for row in rows.fetchall()}
    return [m for m in chunk if m.attributes["id"] not in there]


def _due(step: Step, now: float, sent: int, total: int) -> bool:
    if step.at is not None:
        return now >= step.at
    # A step after more events than the workload sends runs at its end.
    return sent >= min(step.after_events or 0, total)


def _next_due(state: _Run, pending: Sequence[Step]) -> float:
    """When the next timed step or heal is due (seconds after the start)."""
    times = [s.at for s in pending if s.at is not None]
    times += [a.heal_at for a in state.applied if a.heal_at is not None]
    return min(times, default=state.elapsed() + POLL)


def _apply(state: _Run, step: Step) -> None:
    from edaenv.faults import containers
    from edaenv.faults.state import FaultStore

    config = state.stack.config
    action, role = step.action, step.role or ""
    if action in MESSAGE_FAULTS:
        (_duplicate if action == "duplicate" else _poison)(state, step.count or 1)
        return
    store = FaultStore(config.generated_dir)
    at = state.elapsed()
    if action in REPAIRS:
        containers.repair(config, store, action, role)
        state.say(f"{action} {role}")
        healed = ("kill", "stop") if action == "start" else ("pause",)
        state.applied = [
            a for a in state.applied if not (a.role == role and a.step.action in healed)
        ]
        state.faults.append(f"{action} {role} at {at:.1f}s")
        return
    state.touched.add(role)  # before: an interrupt right after the inject still heals it
    fault = containers.inject(config, store, action, role)
    state.say(f"{action} {role}")  # said once done: `inject status` shows it from now on
    if action in CONTAINER_FAULTS:
        heal_at = state.elapsed() + step.lasting if step.lasting else None
        state.applied.append(_Applied(step, role, fault, heal_at))
    lasting = f" for {step.lasting:g}s" if step.lasting else ""
    state.faults.append(f"{action} {role} at {at:.1f}s{lasting}")


def _heal(state: _Run, role: str, why: str) -> None:
    """Heal a role's faults through the path `edaenv inject heal ROLE` takes."""
    from edaenv.faults import service

    healed = service.heal(state.stack.config, [role], quiet_missing=True)
    state.applied = [a for a in state.applied if a.role != role]
    if healed:
        state.say(f"healed {role} ({why})")


def _heal_everything(state: _Run, *, strict: bool) -> None:
    """Heal what is still broken and wait until the touched services are healthy again, so
    that the next scenario starts on a settled stack. Not strict (the run is failing anyway):
    what cannot be healed is said, not raised over the first error."""
    from edaenv.faults import service

    problems = []
    # Every role a fault was applied to: one recorded as it was interrupted is healed too.
    for role in sorted({a.role for a in state.applied} | state.touched):
        try:
            _heal(state, role, "at the end of the run")
        except EdaenvError as exc:
            problems.append(f"{role}: {exc}")
    if state.touched:
        try:
            late = service.wait_healthy(state.stack.config, sorted(state.touched), HEALTHY_TIMEOUT)
        except EdaenvError as exc:
            late, problems = [], [*problems, str(exc)]
        if late:
            problems.append(f"not healthy after {HEALTHY_TIMEOUT:g}s: {', '.join(late)}")
    if not problems:
        return
    if strict:
        raise EngineError(
            f"the stack did not recover from scenario {state.scenario.name}: "
            + "; ".join(problems),
            hint="see `edaenv inject status`, `edaenv status` and `edaenv logs ROLE`",
        )
    state.say("could not heal: " + "; ".join(problems))


def _duplicate(state: _Run, count: int) -> None:
    """Deliver `count` events already sent once more each, as `edaenv inject duplicate` does;
    through the outbox, only once the relay has published them."""
    from edaenv.faults import messages

    at = state.elapsed()
    chosen = [s.event_id for s in state.sent if not s.poison][:count]
    if state.scenario.workload.via == "outbox":
        _wait_published(state, chosen)
    state.say(f"duplicate {len(chosen)} event(s)")
    for event_id in chosen:
        messages.duplicate(state.stack.config, event_id, times=1, topic=state.contract.topic)
    state.faults.append(f"duplicate {len(chosen)} event(s) at {at:.1f}s")


def _wait_published(state: _Run, ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with state.stack.database() as conn:
            left = conn.execute(
                "SELECT count(*) FROM outbox WHERE id = ANY(%s::uuid[]) AND published_at IS NULL",
                [ids],
            ).fetchone()[0]
        if not left:
            return
        if time.monotonic() > deadline:
            raise EngineError(
                f"the relay did not publish {left} event(s) within {timeout:g}s, so they "
                "cannot be duplicated",
                hint="see `edaenv status` and `edaenv logs relay`",
            )
        time.sleep(POLL)


def _poison(state: _Run, count: int) -> None:
    """`count` messages no consumer can parse, as `edaenv inject poison` sends them: each must
    end in the dead letters."""
    from edaenv.faults import messages

    started = state.elapsed()
    state.say(f"poison {count} message(s)")
    fault = messages.poison(state.stack.config, event=state.scenario.workload.event, count=count)
    at = datetime.now(UTC)
    for event_id in fault.event_ids or ():
        state.ids.add(event_id)
        state.sent.append(Sent(event_id, "", 0, at, poison=True))
    state.faults.append(f"poison {count} message(s) at {started:.1f}s")


# --- until the consumer is done ---------------------------------------------------------------


def _wait_quiet(state: _Run, timeout: float) -> bool:
    """Wait until the outbox has no unpublished event of the run, every event is processed
    or dead-lettered, and nothing changed for SETTLE seconds; False after `timeout`."""
    deadline = time.monotonic() + timeout
    ids = sorted(state.ids)
    state.say(f"waiting until the consumer is done (at most {timeout:g}s)")
    last: tuple[int, ...] | None = None
    since = time.monotonic()
    checked_dead = 0.0
    while True:
        with state.stack.database() as conn:
            processed = _processed_ids(conn, state.scenario.check.consumer, ids)
            effects = len(_run_effects(conn, state)) if state.scenario.check.effects else 0
            unpublished = 0
            if state.scenario.workload.via == "outbox":
                unpublished = conn.execute(
                    "SELECT count(*) FROM outbox WHERE id = ANY(%s::uuid[]) "
                    "AND published_at IS NULL",
                    [[s.event_id for s in state.sent if not s.poison]],
                ).fetchone()[0]
        snapshot = (len(processed), effects, unpublished)
        if snapshot != last:
            last, since = snapshot, time.monotonic()
        settled = not unpublished and time.monotonic() - since >= SETTLE
        if settled:
            left = state.ids - processed
            if not left:
                state.say(f"done: {len(processed)} processed")
                return True
            if time.monotonic() - checked_dead >= SETTLE:
                checked_dead = time.monotonic()
                if not left - set(_dead_letter_ids(state)):
                    state.say(f"done: {len(processed)} processed, {len(left)} dead-lettered")
                    return True
        if time.monotonic() >= deadline:
            state.say(
                f"not done after {timeout:g}s: {len(processed)} of {len(state.ids)} processed"
                + (f", {unpublished} still in the outbox" if unpublished else "")
            )
            return False
        time.sleep(POLL)


def _processed_ids(conn: Any, consumer: str, ids: list[str]) -> set[str]:
    rows = conn.execute(
        "SELECT event_id FROM processed_events WHERE consumer = %s AND event_id = ANY(%s)",
        [consumer, ids],
    )
    return {row[0] for row in rows.fetchall()}


def _run_effects(conn: Any, state: _Run) -> list[str]:
    return [event_id for event_id in _effects(conn, state.scenario) if event_id in state.ids]


def _dead_letter_ids(state: _Run) -> list[str]:
    """This run's events among the dead letters of the workload's topic, one per letter."""
    from edaenv.outbox.dlq import read_dead_letters

    broker = state.stack.broker()
    try:
        letters = read_dead_letters(broker, state.stack.config.broker, [state.contract.topic])
    finally:
        _close(broker)
    return [letter.id for letter in letters if letter.id in state.ids]


def _collect(state: _Run) -> tuple[list[Processed], list[str] | None, list[str]]:
    """What the consumer did with this run's events: processed (in the order it recorded
    them), side effects (the scenario's query), dead letters."""
    ids = sorted(state.ids)
    with state.stack.database() as conn:
        rows = conn.execute(
            "SELECT event_id, seq, processed_at FROM processed_events "
            "WHERE consumer = %s AND event_id = ANY(%s) ORDER BY seq",
            [state.scenario.check.consumer, ids],
        ).fetchall()
        effects = _run_effects(conn, state) if state.scenario.check.effects else None
    processed = [Processed(event_id, int(seq), at) for event_id, seq, at in rows]
    return processed, effects, _dead_letter_ids(state)
