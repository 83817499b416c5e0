"""A verify run's reports for people (text), scripts (JSON) and CI (JUnit XML)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree

from edaenv.verify.check import KINDS, Report

SHOWN = 10  # violations listed in the text before "... and N more"
# XML 1.0 cannot hold these, not even escaped: a CI report must still parse.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_HOW = {
    "lost": "nothing lost",
    "duplicate": "one side effect per event",
    "order": "order per aggregate",
    "dead-letter": "poison dead-lettered, valid events not",
}


def text(report: Report) -> str:
    """What held and what did not, the counts, and the first violations."""
    mark = "✔" if report.ok else "✘"
    lines = [
        f"{mark} {report.scenario}: {report.sent} events sent, {report.processed} processed, "
        f"{report.effects} side effects, {report.dead_letters} of {report.poison_sent} poison "
        f"dead-lettered, {report.seconds:.1f}s"
    ]
    if report.faults:
        lines.append(f"  faults: {', '.join(report.faults)}")
    for kind in KINDS:
        found = report.count(kind)
        lines.append(
            f"  {'held' if not found else 'VIOLATED':<8} {_HOW[kind]}"
            + (f": {found}" if found else "")
        )
    if not report.quiet:
        lines.append("  VIOLATED the flow became quiet in time (the consumer was still busy)")
    age = report.age_ms
    if age.get("max") is not None:
        lines.append(
            f"  age (sent to processed): p50 {age['p50']} ms, p99 {age['p99']} ms, "
            f"max {age['max']} ms"
        )
    for violation in report.violations[:SHOWN]:
        lines.append(
            f"  {violation.kind}: event {violation.event_id} of aggregate "
            f"{violation.aggregate or '-'}: {violation.detail}"
        )
    if len(report.violations) > SHOWN:
        lines.append(f"  ... and {len(report.violations) - SHOWN} more (--json lists them all)")
    return "\n".join(lines)


def as_json(reports: Sequence[Report]) -> dict[str, Any]:
    return {
        "ok": all(r.ok for r in reports),
        "scenarios": [
            {
                "name": r.scenario,
                "ok": r.ok,
                "quiet": r.quiet,
                "seconds": round(r.seconds, 3),
                "sent": r.sent,
                "processed": r.processed,
                "effects": r.effects,
                "poison_sent": r.poison_sent,
                "dead_letters": r.dead_letters,
                "violations_by_kind": {kind: r.count(kind) for kind in KINDS},
                "violations": [
                    {
                        "kind": v.kind,
                        "event_id": v.event_id,
                        "aggregate": v.aggregate,
                        "detail": v.detail,
                    }
                    for v in r.violations
                ],
                "age_ms": dict(r.age_ms),
                "faults": list(r.faults),
            }
            for r in reports
        ],
    }


def junit_xml(reports: Sequence[Report]) -> str:
    """One test suite, "edaenv verify", with a test case per scenario."""
    failed = sum(not r.ok for r in reports)
    root = ElementTree.Element("testsuites")
    suite = ElementTree.SubElement(
        root,
        "testsuite",
        name="edaenv verify",
        tests=str(len(reports)),
        failures=str(failed),
        errors="0",
        time=f"{sum(r.seconds for r in reports):.3f}",
    )
    for report in reports:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname="edaenv.verify",
            name=_xml(report.scenario),
            time=f"{report.seconds:.3f}",
        )
        if not report.ok:
            kinds = ", ".join(f"{report.count(k)} {k}" for k in KINDS if report.count(k))
            failure = ElementTree.SubElement(
                case,
                "failure",
                message=_xml(kinds or "the flow did not become quiet in time"),
                type="verify",
            )
            failure.text = _xml(text(report))
        ElementTree.SubElement(case, "system-out").text = _xml(text(report))
    body = ElementTree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _xml(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)
