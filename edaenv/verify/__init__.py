"""`edaenv verify`: prove that a consumer stays correct under faults.

- scenario.py: scenario files (`<scaffold>/scenarios/*.yaml`: workload, fault timeline, check),
  loaded with located errors; SCHEMA, the same grammar as a JSON Schema for editors.
- run.py: runs one against the stack (workload through the application layer, faults through
  the code `edaenv inject` runs, the wait until the flow is quiet) and collects the records.
- check.py: the pure checker (lost, duplicate side effects, order per aggregate, dead letters,
  event age) and its Report.
- report.py: the report as text, JSON and JUnit XML.

The interface between them (run.py and the CLI use only this):

    scenario.load_scenario(path) -> Scenario            # ConfigError at file:line
    scenario.find_scenarios(directory, names) -> list[Scenario]  # UsageError for unknown names
    scenario.SCHEMA                                      # JSON Schema (2020-12) of a file
    Scenario(name, path, description, workload: Workload, steps: tuple[Step, ...], check: Check)
    Workload(event, via: "direct" | "outbox", count, rate, aggregates)
    Step(action, role, at | after_events, lasting, count, where)  # scenario.ROLES, ACTIONS
    Check(consumer, effects: SQL | None, quiet_timeout)
    check.check(scenario, sent: [Sent], processed: [Processed], effects: [event id] | None,
                dead_letter_ids, *, faults=(), seconds=0.0, quiet=True) -> Report
    Sent(event_id, aggregate, sequence, sent_at, poison=False)
    Processed(event_id, order, processed_at)
    Report(scenario, sent, processed, effects, poison_sent, dead_letters, violations, age_ms,
           faults, seconds, quiet).ok; Violation(kind, event_id, aggregate, detail)
    report.text(report) -> str; report.as_json(reports) -> dict; report.junit_xml(reports) -> str
"""
