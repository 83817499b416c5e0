"""The failure bundle: everything that helps explain a failed run, each part on its own."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edaenv.ci import BUNDLE_DIR
from edaenv.config import Config
from edaenv.errors import EdaenvError, UsageError
from edaenv.names import shown

if TYPE_CHECKING:
    from edaenv.wire import Delivery


@dataclass
class BundleReport:
    files: list[Path] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def note(self, part: str, problem: str) -> None:
        self.problems[part] = "; ".join(filter(None, (self.problems.get(part), problem)))


def write_bundle(
    config: Config, directory: Path, *, events: int = 50, log_lines: int = 2000
) -> BundleReport:
    """Everything that helps explain a failed run. Each part is collected on its own: a part
    that fails (the broker is down, say) is noted in summary.md and the rest is still written,
    because the bundle runs exactly when things are broken. Nothing is written outside
    `directory`, whatever a topic or a service is called."""
    _make_directory(directory)
    root = directory.resolve()
    report = BundleReport()
    parts: list[tuple[str, Callable[[], dict[str, str]]]] = [
        ("status", lambda: _status(config)),
        ("logs", lambda: _logs(config, log_lines)),
        ("faults", lambda: _faults(config)),
        ("outbox", lambda: _outbox(config, events)),
        ("events", lambda: _events(config, events)),
        ("traces", lambda: _traces(config, collected)),  # from what the parts above found
    ]
    collected: dict[str, str] = {}
    for name, collect in parts:
        try:
            files = collect()
        except Exception as exc:  # a broken part must not lose the others
            text = str(exc) if isinstance(exc, EdaenvError) else f"{type(exc).__name__}: {exc}"
            report.note(name, text.splitlines()[0][:300] if text else type(exc).__name__)
            continue
        for rel, content in files.items():
            path = directory / rel
            if not path.resolve().is_relative_to(root):
                report.note(name, f"not written: {shown(rel)} would be outside {directory}")
                continue
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
            except OSError as exc:  # a full disk loses this file, not the summary's note
                report.note(name, f"{rel}: {exc.strerror or exc}")
                continue
            report.files.append(path)
            collected[rel] = content
    summary = directory / "summary.md"
    try:
        summary.write_text(_summary(config, report, directory, collected), encoding="utf-8")
    except OSError as exc:
        raise EdaenvError(
            f"cannot write {summary}: {exc.strerror or exc}",
            hint="free some space in that file system, or name another directory",
        ) from None
    report.files.append(summary)
    return report


def _make_directory(directory: Path) -> None:
    """The bundle's directory, or a located error before anything is written."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(
            f"{shown(str(directory))} is a file, not a directory",
            where="DIR",
            hint="name a new or existing directory for the bundle, e.g. `edaenv bundle "
            f"{BUNDLE_DIR}`",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the directory {shown(str(directory))}: {exc.strerror or exc}",
            where="DIR",
            hint=f"name a directory you can write to, e.g. `edaenv bundle {BUNDLE_DIR}`",
        ) from None


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=True, default=str) + "\n" for row in rows)


def _status(config: Config) -> dict[str, str]:
    from edaenv.engine.status import docker_client, snapshot

    states = [s.to_json() for s in snapshot(docker_client(), config.project)]
    return {"status.json": json.dumps(states, indent=2, default=str) + "\n"}


def _logs(config: Config, lines: int) -> dict[str, str]:
    from edaenv.engine.status import SERVICE_LABEL, containers, docker_client

    files = {}
    for container in containers(docker_client(), config.project):
        role = container.labels.get(SERVICE_LABEL, container.name)
        raw = container.logs(tail=lines, stdout=True, stderr=True, timestamps=True)
        files[f"logs/{role}.log"] = raw.decode("utf-8", "replace")
    return files


def _faults(config: Config) -> dict[str, str]:
    from edaenv.faults.state import FaultStore

    data = FaultStore(config.generated_dir).as_json()
    return {"faults.json": json.dumps(data, indent=2, sort_keys=True) + "\n"}


def _outbox(config: Config, limit: int) -> dict[str, str]:
    from edaenv.stack.endpoints import connect_database, database_url

    try:
        # The database `publish --via-outbox` writes to: EDAENV_DATABASE_URL wins.
        url = database_url(config)
    except UsageError:  # postgres is off and no database is named: there is no outbox
        return {}

    from edaenv.outbox import stuck

    with connect_database(url) as conn:
        backlog, oldest = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - min(created_at)) FROM outbox "
            "WHERE published_at IS NULL"
        ).fetchone() or (0, None)
        columns = [
            "id",
            "aggregate_type",
            "aggregate_id",
            "event_type",
            "headers",
            "created_at",
            "published_at",
        ]
        pending = conn.execute(
            f"SELECT {', '.join(columns)} FROM outbox WHERE published_at IS NULL "
            "ORDER BY created_at LIMIT %s",
            (limit,),
        ).fetchall()
        recent = conn.execute(
            f"SELECT {', '.join(columns)} FROM outbox ORDER BY created_at DESC LIMIT %s", (limit,)
        ).fetchall()
        processed = conn.execute(
            "SELECT consumer, count(*) FROM processed_events GROUP BY consumer"
        ).fetchall()
        # Rows the relay cannot publish, with the reason (JSON pointer and rule for a payload
        # that breaks its contract): the usual answer to "why did this event never arrive?".
        stuck_rows = stuck.report(conn, limit)
    data = {
        "backlog": backlog,
        "oldest_unpublished_age_s": float(oldest) if oldest is not None else None,
        "stuck": stuck_rows.to_json(),
        "processed_events": {consumer: count for consumer, count in processed},
        "oldest_unpublished": [dict(zip(columns, row, strict=True)) for row in pending],
        "latest": [dict(zip(columns, row, strict=True)) for row in recent],
    }
    return {"outbox.json": json.dumps(data, indent=2, default=str) + "\n"}


def _events(config: Config, limit: int) -> dict[str, str]:
    """The last events and dead letters of each topic, and how many each holds (topics.json,
    for the summary)."""
    from edaenv.application import Stack
    from edaenv.events.contracts import load_contracts, topics
    from edaenv.outbox.dlq import read_dead_letters

    files = {}
    counts: dict[str, dict[str, int | str]] = {}
    stack = Stack(config)
    broker = stack.broker()
    try:
        for topic in topics(load_contracts(config.scaffold_dir / "events")):
            dead = stack.dead_letter_source(topic)
            counts[topic] = {}
            for kind, name in (("events", topic), ("dead-letters", dead)):
                try:
                    if kind == "events":
                        read = broker.tail(name, from_beginning=True, follow=False, idle_timeout=2)
                    else:  # the letters still to handle: not Kafka's markers, nor what they resolve
                        read = (
                            d.delivery for d in read_dead_letters(broker, config.broker, [topic])
                        )
                    last, total = _last(read, limit)
                except EdaenvError as exc:  # e.g. no dead letter yet: keep the other topics
                    files[f"{kind}/{topic}.error.txt"] = f"{exc}\n"
                    counts[topic][kind] = str(exc).splitlines()[0][:200]
                    continue
                files[f"{kind}/{topic}.jsonl"] = _jsonl(last)
                counts[topic][kind] = total
    finally:
        broker.close()
    files["topics.json"] = json.dumps(counts, indent=2, sort_keys=True) + "\n"
    return files


def _last(deliveries: Iterable[Delivery], limit: int) -> tuple[list[dict[str, Any]], int]:
    """The last `limit` events by CloudEvents time, and how many there are. Partitions are
    read one after the other, so the last ones read are not the last ones sent: keep the last
    of each."""
    last: dict[str, deque[dict[str, Any]]] = {}
    total = 0
    for delivery in deliveries:
        total += 1
        partition = str(delivery.position.get("partition", ""))
        last.setdefault(partition, deque(maxlen=limit)).append(
            {
                "topic": delivery.topic,
                "key": delivery.key,
                "attributes": delivery.attributes,
                "headers": delivery.headers,
                "position": delivery.position,
                "value": delivery.value.decode("utf-8", "replace"),
            }
        )
    merged = [event for events in last.values() for event in events]
    merged.sort(key=lambda event: str(event["attributes"].get("time", "")))
    return merged[-limit:], total


def _traces(config: Config, collected: dict[str, str]) -> dict[str, str]:
    """Trace ids of the last events (W3C traceparent: 00-<trace id>-<span id>-<flags>)."""
    ids: dict[str, list[str]] = {}

    def note(traceparent: object, where: str) -> None:
        parts = str(traceparent or "").split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            ids.setdefault(parts[1], [])
            if where not in ids[parts[1]]:
                ids[parts[1]].append(where)

    for rel, content in collected.items():
        if rel.endswith(".jsonl"):
            for line in content.splitlines():
                row = json.loads(line)
                note(row["attributes"].get("traceparent") or row["headers"].get("traceparent"), rel)
        if rel == "outbox.json":
            for row in json.loads(content)["latest"]:
                note((row.get("headers") or {}).get("traceparent"), rel)
    if not ids:
        return {}
    jaeger = ""
    if config.has("jaeger"):
        jaeger = f"http://127.0.0.1:{config.ports()['jaeger']['ui']}/trace/"
    rows = [
        {"trace_id": trace, "seen_in": where, **({"url": jaeger + trace} if jaeger else {})}
        for trace, where in ids.items()
    ]
    return {"traces.json": json.dumps(rows, indent=2) + "\n"}


def _summary(
    config: Config, report: BundleReport, directory: Path, collected: dict[str, str]
) -> str:
    """summary.md: what a person reads first, in words and numbers, from what this run
    collected (not from files an earlier run left in the directory)."""
    lines = [f"# edaenv failure bundle: {config.project} ({config.broker})", ""]
    if "status.json" in collected:
        states = json.loads(collected["status.json"])
        lines += ["## Services", ""]
        for state in states:
            health = state["health"] or state["state"]
            lines.append(f"- {state['service']}: {state['state']} ({health})")
        lines += [] if states else ["- none running"]
        lines.append("")
    if "outbox.json" in collected:
        data = json.loads(collected["outbox.json"])
        age = data["oldest_unpublished_age_s"]
        processed = data["processed_events"]
        lines += [
            "## Outbox",
            "",
            f"- unpublished rows: {data['backlog']}",
            f"- oldest unpublished: {f'{age:.1f} s ago' if age is not None else 'none'}",
            "- processed events: "
            + (", ".join(f"{n} by {c}" for c, n in sorted(processed.items())) or "none"),
            f"- rows the relay cannot publish: {data['stuck']['total']}",
        ]
        for row in data["stuck"]["rows"]:
            lines.append(f"  - {row['id']} ({row['event_type']}): {row['reason']}: {row['detail']}")
        lines.append("")
    if "topics.json" in collected:
        lines += ["## Topics", ""]
        for topic, counts in json.loads(collected["topics.json"]).items():
            events, dead = counts.get("events"), counts.get("dead-letters")
            lines.append(f"- {topic}: {_count(events, 'event')}, {_count(dead, 'dead letter')}")
        lines.append("")
    if "faults.json" in collected:
        active = json.loads(collected["faults.json"])["active"]
        lines += ["## Active faults", ""]
        lines += [f"- {f['id']}: {f['kind']} {f.get('target') or ''}".rstrip() for f in active] or [
            "- none"
        ]
        lines.append("")
    lines += ["## Files", ""]
    lines += [f"- {p.relative_to(directory)}" for p in sorted(report.files)]
    if report.problems:
        lines += ["", "## Not collected", ""]
        lines += [f"- {name}: {problem}" for name, problem in report.problems.items()]
    return "\n".join(lines) + "\n"


def _count(value: int | str | None, noun: str) -> str:
    """`3 dead letters`, or why there is no number."""
    if isinstance(value, int):
        return f"{value} {noun}{'' if value == 1 else 's'}"
    return f"{noun}s not read ({value})" if value else f"{noun}s not read"
