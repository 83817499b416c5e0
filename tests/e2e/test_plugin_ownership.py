"""The pytest plugin tears down only what it started, once, also under pytest-xdist.

Each test runs pytest in a subprocess on modules from tests/plugin_project copied beside a real
edaenv.yaml (as a user's project), and reads what happened from the engine: the project's
containers, volumes and networks before and after, and the engine's event log of the run.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import run_user_pytest

pytestmark = pytest.mark.engine

PLUGIN_PROJECT = Path(__file__).resolve().parents[1] / "plugin_project"
MARKER = Path(".generated") / "pytest-stack.json"
LIFE = ("create", "start", "destroy")


def run_pytest(
    root: Path, modules: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    tests = root / "tests"
    tests.mkdir(exist_ok=True)
    for old in tests.glob("test_*.py"):
        old.unlink()
    for name in modules:
        (tests / name).write_text((PLUGIN_PROJECT / name).read_text())
    return run_user_pytest(root, tests, "--edaenv-timeout", "120", *args, env=env)


def run_two_workers(root: Path, record: Path) -> subprocess.CompletedProcess[str]:
    """The two worker modules under `pytest -n 2`, one module per worker; each records what it
    saw under `record`."""
    return run_pytest(
        root,
        ["test_worker_a.py", "test_worker_b.py"],
        "-n",
        "2",
        "--dist",
        "loadfile",
        env={"EDAENV_PLUGIN_RECORD": str(record)},
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout[-4000:] + result.stderr[-2000:]


def events(stack: Any, since: datetime) -> list[tuple[str, float, str]]:
    """(action, time, service) of the project's container events since `since`, in order
    (health checks left out)."""
    seen = stack.client.events(
        since=since,
        # The engine works in whole seconds: `since` is cut below, `until` needs one more.
        until=datetime.now(UTC) + timedelta(seconds=2),
        filters={"type": "container", "label": stack.label},
        decode=True,
    )
    return [
        (
            event["Action"],
            event["timeNano"] / 1e9,
            event["Actor"]["Attributes"]["com.docker.compose.service"],
        )
        for event in seen
        if event["timeNano"] / 1e9 >= since.timestamp()
        and not event["Action"].startswith(("exec_", "health_status"))
    ]


def inventory(stack: Any) -> dict[str, Any]:
    """What the project has on the engine, with what would change if it were made again."""
    return {
        "containers": {
            c.labels["com.docker.compose.service"]: (c.id, c.status, c.attrs["State"]["StartedAt"])
            for c in stack.containers()
        },
        "volumes": {v.name: v.attrs["CreatedAt"] for v in stack.volumes()},
        "networks": {n.id for n in stack.networks()},
    }


def sql(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


def test_a_partly_started_stack_keeps_its_containers_and_data(make_stack: Any) -> None:
    stack = make_stack("nats", ("postgres", "prometheus"))
    stack.up("broker", "postgres")
    dsn = stack.env()["EDAENV_DATABASE_URL"]
    sql(dsn, "CREATE TABLE developer_data (note text); INSERT INTO developer_data VALUES ('mine')")
    before = inventory(stack)
    assert sorted(before["containers"]) == ["broker", "postgres"]
    since = datetime.now(UTC)

    result = run_pytest(stack.root, ["test_with_edaenv.py"], "-k", "not consumer")

    assert result.returncode == 0, output(result)
    assert "4 passed" in result.stdout
    # The plugin completed the stack with the missing service, and removed just that.
    log = events(stack, since)
    assert {service for _, _, service in log} == {"prometheus"}, log
    assert [action for action, _, _ in log if action in LIFE] == ["create", "start", "destroy"]
    assert inventory(stack) == before
    assert sql(dsn, "SELECT note FROM developer_data") == [("mine",)]
    assert not (stack.scaffold / MARKER).exists()

    # A service the developer stopped is started for the session and stopped again after it.
    stack.up("prometheus")
    stack.client.containers.get(inventory(stack)["containers"]["prometheus"][0]).stop()
    before = inventory(stack)
    since = datetime.now(UTC)

    result = run_pytest(stack.root, ["test_with_edaenv.py"], "-k", "sql_and_wait_for")

    assert result.returncode == 0, output(result)
    log = events(stack, since)
    assert {service for _, _, service in log} == {"prometheus"}, log
    assert [action for action, _, _ in log if action in (*LIFE, "stop")] == ["start", "stop"]
    after = inventory(stack)
    assert after["containers"]["prometheus"][:2] == before["containers"]["prometheus"][:2]
    assert after["containers"]["prometheus"][1] == "exited"
    del after["containers"]["prometheus"], before["containers"]["prometheus"]
    assert after == before
    assert sql(dsn, "SELECT note FROM developer_data") == [("mine",)]
    assert not (stack.scaffold / MARKER).exists()


def test_a_stack_with_a_paused_service_is_left_untouched(make_stack: Any) -> None:
    stack = make_stack("nats", ("postgres",))
    stack.up()
    dsn = stack.env()["EDAENV_DATABASE_URL"]
    sql(dsn, "CREATE TABLE developer_data (note text); INSERT INTO developer_data VALUES ('mine')")
    paused = stack.edaenv("inject", "pause", "broker")
    assert paused.code == 0, paused.text
    before = inventory(stack)
    since = datetime.now(UTC)

    result = run_pytest(stack.root, ["test_with_edaenv.py"], "-k", "sql_and_wait_for")

    assert result.returncode == 1, output(result)
    assert (
        f"edaenv stack: the stack '{stack.project}' is up but not healthy (broker paused): the "
        "plugin does not restart or recreate containers it did not start, so it changed "
        "nothing\n  hint: `edaenv inject heal --all` undoes injected faults, `edaenv logs "
        "broker` shows why a service fails; or `edaenv down` (your volumes stay) and the "
        "session brings up its own containers"
    ) in result.stdout
    assert "Traceback" not in result.stdout
    assert events(stack, since) == []
    assert inventory(stack) == before
    assert sql(dsn, "SELECT note FROM developer_data") == [("mine",)]
    assert not (stack.scaffold / MARKER).exists()


def test_two_xdist_workers_share_one_stack_removed_once_after_the_last(
    make_stack: Any, tmp_path: Path
) -> None:
    stack = make_stack("nats", ("postgres",))
    since = datetime.now(UTC)

    result = run_two_workers(stack.root, tmp_path)

    assert result.returncode == 0, output(result)
    assert "2 passed" in result.stdout
    seen = {p.stem: json.loads(p.read_text()) for p in tmp_path.glob("*.json")}
    assert sorted(entry["worker"] for entry in seen.values()) == ["gw0", "gw1"]
    assert seen["a"]["postgres"] == seen["b"]["postgres"]  # one Postgres for both workers
    log = events(stack, since)
    for service in ("broker", "postgres"):
        made = [action for action, at, s in log if s == service and action in LIFE]
        assert made == ["create", "start", "destroy"], log
    # Worker a was done seconds before worker b: nothing was stopped before b was done too.
    stopped = [at for action, at, _ in log if action in ("kill", "die", "stop")]
    assert stopped and min(stopped) >= max(entry["done"] for entry in seen.values()), log
    assert stack.containers() == [] and stack.volumes() == [] and stack.networks() == []
    assert not (stack.scaffold / MARKER).exists()


def test_what_a_killed_session_started_goes_when_the_next_session_ends(
    make_stack: Any, tmp_path: Path
) -> None:
    stack = make_stack("nats", ("postgres",))
    killed = run_pytest(stack.root, ["test_dies_holding_the_stack.py"])
    assert killed.returncode == -signal.SIGKILL, output(killed)
    left = inventory(stack)
    assert sorted(left["containers"]) == ["broker", "postgres"]
    marker = json.loads((stack.scaffold / MARKER).read_text())
    assert sorted(marker["owned"]["containers"]) == sorted(
        c[0] for c in left["containers"].values()
    )
    since = datetime.now(UTC)

    result = run_pytest(
        stack.root, ["test_worker_a.py"], env={"EDAENV_PLUGIN_RECORD": str(tmp_path)}
    )

    assert result.returncode == 0, output(result)
    actions = [action for action, _, _ in events(stack, since) if action in LIFE]
    assert actions == ["destroy", "destroy"]  # reused, then removed: nothing created again
    assert stack.containers() == [] and stack.volumes() == [] and stack.networks() == []
    assert not (stack.scaffold / MARKER).exists()


def test_a_stack_kept_with_edaenv_keep_is_handed_over(make_stack: Any, tmp_path: Path) -> None:
    stack = make_stack("nats", ("postgres",))
    env = {"EDAENV_PLUGIN_RECORD": str(tmp_path)}

    kept = run_pytest(stack.root, ["test_worker_a.py"], "--edaenv-keep", env=env)

    assert kept.returncode == 0, output(kept)
    running = inventory(stack)
    assert {s: c[1] for s, c in running["containers"].items()} == {
        "broker": "running",
        "postgres": "running",
    }
    assert not (stack.scaffold / MARKER).exists()
    # Now the developer's stack: a later session reuses it and leaves it running.
    again = run_pytest(stack.root, ["test_worker_a.py"], env=env)
    assert again.returncode == 0, output(again)
    assert inventory(stack) == running


def test_a_failed_start_fails_each_worker_once_and_leaves_nothing(
    make_stack: Any, tmp_path: Path
) -> None:
    stack = make_stack("nats", ("postgres",))
    stack.override('services:\n  postgres:\n    entrypoint: ["false"]\n')

    result = run_two_workers(stack.root, tmp_path)

    assert result.returncode == 1, output(result)
    assert "2 errors" in result.stdout
    # Said at once, as the failure it is (not as a timeout): the broker may still be starting.
    failure = re.search(
        r"\nedaenv stack: (up failed: postgres exited with code 1[^\n]*)\n", result.stdout
    )
    assert failure, output(result)
    hint = (
        "  hint: `edaenv logs postgres` shows the whole log, `edaenv status` every service; the "
        "session removed what it had started: `--edaenv-keep` leaves it for a look\n"
    )
    assert "\npostgres: exited with code 1\n" in result.stdout
    assert hint in result.stdout, output(result)
    # One worker tried; the other failed at once with its message instead of trying again.
    assert (
        "\nedaenv stack: another worker of this test run could not bring the stack up: "
        f"{failure.group(1)}\n"
    ) in result.stdout, output(result)
    assert "within 120s" not in result.stdout
    assert "During handling" not in result.stdout and "Traceback" not in result.stdout
    assert stack.containers() == [] and stack.volumes() == [] and stack.networks() == []
    assert not (stack.scaffold / MARKER).exists()
