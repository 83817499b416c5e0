"""Why `up` says a service is not ready: the cause from the engine's own data (inspect attrs
and the restart policy), as plain dicts shaped like the Engine API's answers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edaenv.engine.lifecycle import STILL_STARTING, broken_for_good, cause, waits_only
from edaenv.engine.status import ServiceState
from edaenv.engine.watch import restarts


def state(
    state: str = "running", health: str | None = "starting", code: int | None = None
) -> ServiceState:
    return ServiceState("consumer", "p-consumer-1", state, health, code, None, None, id="c1")


def attrs(
    status: str = "running",
    *,
    code: int = 0,
    error: str = "",
    oom: bool = False,
    checks: list[str] | None = None,
    restart_count: int = 0,
) -> dict[str, Any]:
    engine_state: dict[str, Any] = {
        "Status": status,
        "ExitCode": code,
        "Error": error,
        "OOMKilled": oom,
    }
    if checks is not None:
        engine_state["Health"] = {
            "Status": "unhealthy",
            "Log": [{"ExitCode": 1, "Output": text} for text in checks],
        }
    return {"State": engine_state, "RestartCount": restart_count}


def depends_on(data: dict[str, Any], label: str) -> dict[str, Any]:
    """data with compose's depends_on label ("name:condition:restart,...")."""
    return {**data, "Config": {"Labels": {"com.docker.compose.depends_on": label}}}


OCI = (
    "OCI runtime create failed: runc create failed: unable to start container process: "
    'exec: "nats-server": executable file not found in $PATH: unknown'
)


@pytest.mark.parametrize(
    ("shown", "data", "kwargs", "expected"),
    [
        (
            None,
            {},
            {"image": "mirror.example/nats:2"},
            "image mirror.example/nats:2 is not here and could not be pulled",
        ),
        (
            None,
            {},
            {"said": "pulling\nError response: manifest unknown\n"},
            "not created (Error response: manifest unknown)",
        ),
        (None, {}, {}, "not created (no container was created)"),
        (
            state("exited", None, 127),
            attrs("exited", code=127, error=OCI),
            {},
            f"failed to start: {OCI} (does the image fit this service?)",
        ),
        (state("exited", None, 3), attrs("exited", code=3), {}, "exited with code 3"),
        (
            state("exited", None, 137),
            attrs("exited", code=137, oom=True),
            {},
            "exited with code 137 (killed: out of memory)",
        ),
        (state("exited", None, 2), {}, {}, "exited with code 2"),
        (
            state("running", "unhealthy"),
            attrs(checks=["old", "curl: (7) refused\n\n  retry\n"]),
            {},
            "unhealthy: curl: (7) refused / retry",
        ),
        (
            state("running", "unhealthy"),
            attrs(checks=[]),
            {},
            "unhealthy: its health check failed, retries exhausted",
        ),
        (
            state("restarting", None, 1),
            attrs("restarting", code=1, restart_count=4),
            {},
            "restarting: exited with code 1, restarted 4 time(s)",
        ),
        (
            state("running", "starting"),
            attrs(restart_count=2),
            {},
            "restarting: running, restarted 2 time(s)",
        ),
        (
            state("created", None),
            depends_on(
                attrs("created"), "broker:service_healthy:false,postgres:service_healthy:false"
            ),
            {"failed": {"postgres", "consumer"}},
            "not started: it waits for postgres, which failed",
        ),
        (
            state("created", None),
            depends_on(
                attrs("created"), "broker:service_healthy:false,postgres:service_healthy:false"
            ),
            {"failed": {"consumer"}},
            "not started: `up` stopped at the first failure, before compose started it",
        ),
        (
            state("created", None),
            depends_on(
                attrs("created"), "broker:service_healthy:false,postgres:service_healthy:false"
            ),
            {"failed": {"consumer"}, "starting": {"postgres"}},
            "not started: it waits for postgres, still starting",
        ),
        (
            state("created", None),
            attrs("created"),
            {},
            "not started: `up` stopped at the first failure, before compose started it",
        ),
        (state("running", "starting"), attrs(), {}, STILL_STARTING),
    ],
)
def test_cause_names_what_the_engine_says(
    shown: ServiceState | None, data: dict[str, Any], kwargs: dict[str, Any], expected: str
) -> None:
    assert cause(shown, data, **kwargs) == expected


@pytest.mark.parametrize(
    ("policy", "code", "again"),
    [
        ({}, 1, False),
        ({"Name": "no"}, 1, False),
        ({"Name": ""}, 1, False),
        ({"Name": "always"}, 0, True),
        ({"Name": "unless-stopped"}, 3, True),
        ({"Name": "on-failure"}, 0, False),
        ({"Name": "on-failure"}, 1, True),
        ({"Name": "on-failure", "MaximumRetryCount": 3, "RestartCount": 2}, 1, True),
        ({"Name": "on-failure", "MaximumRetryCount": 3, "RestartCount": 3}, 1, False),
    ],
)
def test_restarts_follows_the_engines_restart_policy(
    policy: dict[str, Any], code: int, again: bool
) -> None:
    assert restarts(policy, code) is again


@pytest.mark.parametrize(
    ("shown", "for_good"),
    [
        (state("exited", None, 3), True),
        (state("dead", None, 137), True),
        (state("running", "unhealthy"), True),
        (state("exited", None, 0), False),  # a one-shot that did its job
        (state("restarting", None, 1), False),  # the engine starts it again
        (state("running", "starting"), False),
        (state("running", "healthy"), False),
        (state("created", None), False),
    ],
)
def test_up_stops_waiting_only_for_what_waiting_cannot_fix(
    shown: ServiceState, for_good: bool
) -> None:
    assert broken_for_good(shown) is for_good


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["created", "running", "restarting", "exited", "dead", "paused"]),
    st.sampled_from([None, "starting", "healthy", "unhealthy"]),
    st.integers(-1, 255),
    st.sampled_from(["", "  \n", OCI]),
    st.integers(0, 5),
)
def test_only_a_service_still_starting_is_called_so(
    engine_state: str, health: str | None, code: int, error: str, restarted: int
) -> None:
    """ "Still starting" (and with it the --timeout advice) only for a running container
    whose health check is still starting, never restarted and with no engine error."""
    shown = state(engine_state, health, code)
    data = attrs(engine_state, code=code, error=error, restart_count=restarted)
    said = cause(shown, data)
    starting = (
        engine_state == "running" and health == "starting" and not error.strip() and not restarted
    )
    assert (said == STILL_STARTING) is starting, said
    assert said.strip() and "timeout" not in said


@pytest.mark.parametrize(
    ("said", "pending"),
    [
        (STILL_STARTING, True),
        ("not started: it waits for postgres, still starting", True),
        ("not started: it waits for broker, postgres, still starting", True),
        ("not started: it waits for postgres, which failed", False),
        ("not started: `up` stopped at the first failure, before compose started it", False),
        ("unhealthy: the database system is still starting", False),  # a probe's own words
        ("exited with code 3", False),
    ],
)
def test_only_what_time_would_mend_counts_as_a_timeout(said: str, pending: bool) -> None:
    assert waits_only(said) is pending
