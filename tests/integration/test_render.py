"""The rendered stack, checked by the real tools: compose v2, promtool, PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_services_env, run_edaenv

BROKERS = ("kafka", "redpanda", "rabbitmq", "nats")
ALL_OFF = ("postgres", "outbox", "consumer", "jaeger", "prometheus", "grafana")
SHAPES = {
    "all": (),
    "broker-only": ALL_OFF,
    "broker+postgres+outbox": ("consumer", "jaeger", "prometheus", "grafana"),
}


def compose_v2() -> list[str]:
    proc = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.startswith("2."), (
        "compose v2 is required: run scripts/setup-engine.sh (it installs the CLI plugin)"
    )
    return ["docker", "compose"]


def init(project: Path, broker: str, without: tuple[str, ...]) -> None:
    args = ["init", "--defaults", "--broker", broker]
    for name in without:
        args += ["--without", name]
    result = run_edaenv(*args, cwd=project)
    assert result.code == 0, result.err


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("broker", BROKERS)
def test_compose_v2_accepts_every_stack(project: Path, broker: str, shape: str) -> None:
    init(project, broker, SHAPES[shape])
    compose = project / "eda" / "compose.yaml"
    proc = subprocess.run(
        [*compose_v2(), "-f", str(compose), "config", "-q"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr

    resolved = subprocess.run(
        [*compose_v2(), "-f", str(compose), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    services = yaml.safe_load(resolved)["services"]
    expected = {"broker"} | {
        role
        for role, component in (
            ("postgres", "postgres"),
            ("relay", "outbox"),
            ("consumer", "consumer"),
            ("jaeger", "jaeger"),
            ("prometheus", "prometheus"),
            ("grafana", "grafana"),
        )
        if component not in SHAPES[shape]
    }
    assert set(services) == expected
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes on {port['host_ip']}"
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy"
    text = compose.read_text()
    for weak in ("guest", "admin:admin", "postgres:postgres"):
        assert weak not in text


def test_render_is_deterministic_and_check_detects_staleness(project: Path) -> None:
    init(project, "rabbitmq", ())
    scaffold = project / "eda"
    before = {p: p.read_bytes() for p in scaffold.rglob("*") if p.is_file()}
    assert run_edaenv("render", cwd=project).out == "eda/compose.yaml\n"
    assert {p: p.read_bytes() for p in scaffold.rglob("*") if p.is_file()} == before
    assert run_edaenv("render", "--check", cwd=project).code == 0

    config = project / "edaenv.yaml"
    config.write_text(config.read_text().replace("offset: 0", "offset: 100"))
    stale = run_edaenv("render", "--check", cwd=project)
    assert stale.code == 1
    assert "stale: eda/compose.yaml" in stale.err
    assert b"127.0.0.1:9192:9092" not in (scaffold / "compose.yaml").read_bytes()
    assert "127.0.0.1:5772:5672" in run_edaenv("render", "--stdout", cwd=project).out


def test_config_found_by_walking_up(project: Path) -> None:
    init(project, "nats", ())
    deep = project / "src" / "service"
    deep.mkdir(parents=True)
    assert run_edaenv("render", "--check", cwd=deep).code == 0
    assert (
        run_edaenv(
            "--config", str(project / "edaenv.yaml"), "render", "--check", cwd=project.parent
        ).code
        == 0
    )


def test_promtool_accepts_the_prometheus_config(project: Path) -> None:
    init(project, "rabbitmq", ())
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required: apt-get install prometheus (scripts/test does)"
    config = project / "eda" / ".generated" / "prometheus" / "prometheus.yml"
    proc = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_outbox_migration_applies_to_real_postgres(project: Path) -> None:
    import psycopg

    init(project, "kafka", ())
    services = load_services_env()
    admin = (
        f"host=127.0.0.1 port={services['EDAENV_TEST_PG_PORT']} "
        f"user={services['EDAENV_TEST_PG_USER']} "
        f"password={services['EDAENV_TEST_PG_PASSWORD']}"
    )
    database = f"migration_{project.parent.name[-8:].lower().replace('-', '_')}"
    with psycopg.connect(
        admin + f" dbname={services['EDAENV_TEST_PG_DB']}", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
    try:
        sql = (project / "eda" / "db" / "migrations" / "001_outbox.sql").read_text()
        with psycopg.connect(admin + f" dbname={database}") as conn:
            conn.execute(sql)
            conn.execute(sql)  # idempotent: a second run changes nothing and fails nothing
            conn.execute("LISTEN outbox")
            conn.execute(
                "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload) "
                "VALUES (gen_random_uuid(), 'Order', 'o-1', 'OrderPlaced', '{\"total\": 1}')"
            )
            conn.commit()
            notes = list(conn.notifies(timeout=5, stop_after=1))
            assert [n.channel for n in notes] == ["outbox"]
            columns = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name='outbox'"
                )
            }
            assert {
                "id",
                "aggregate_type",
                "aggregate_id",
                "event_type",
                "payload",
                "created_at",
                "published_at",
            } <= columns
            indexes = {
                r[0]
                for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename='outbox'")
            }
            assert "outbox_unpublished" in indexes
            conn.execute("INSERT INTO processed_events (consumer, event_id) VALUES ('c', 'e')")
            assert (
                conn.execute(
                    "INSERT INTO processed_events (consumer, event_id) VALUES "
                    "('c', 'e') ON CONFLICT DO NOTHING"
                ).rowcount
                == 0
            )
    finally:
        with psycopg.connect(
            admin + f" dbname={services['EDAENV_TEST_PG_DB']}", autocommit=True
        ) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@pytest.mark.parametrize("broker", BROKERS)
def test_render_check_passes_on_a_fresh_clone_and_after_ci_prepare(
    tmp_path: Path, broker: str
) -> None:
    """CI clones the repository (no .env: it is git-ignored), runs `ci prepare` (fresh secrets,
    another project name and port offset) and `render --check`: it must pass at every step, and
    nothing committed may change."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", cwd=origin)
    init(origin, broker, ())
    git("add", "-A", cwd=origin)
    git("commit", "-qm", "scaffold", cwd=origin)
    clone = tmp_path / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "eda" / ".env").exists()

    result = run_edaenv("render", "--check", cwd=clone)
    assert (result.code, result.err) == (0, "✔ generated files are up to date\n")

    prepared = run_edaenv("ci", "prepare", "--unique", "--port-offset", "300", cwd=clone)
    assert prepared.code == 0, prepared.err
    variables = dict(line.split("=", 1) for line in prepared.out.splitlines())
    assert set(variables) == {"EDAENV_PROJECT", "EDAENV_PORT_OFFSET"}
    assert (clone / "eda" / ".env").exists()
    for env in ({}, variables):
        result = run_edaenv("render", "--check", cwd=clone, env=env)
        assert (result.code, result.err) == (0, "✔ generated files are up to date\n"), env

    # An isolated run renders its own copy; the committed file stays byte for byte.
    assert run_edaenv("render", cwd=clone, env=variables).out == "eda/.generated/compose.yaml\n"
    isolated = yaml.safe_load((clone / "eda" / ".generated" / "compose.yaml").read_text())
    assert isolated["name"] == variables["EDAENV_PROJECT"]
    assert git("status", "--porcelain", cwd=clone) == ""


def test_compose_yaml_carries_nothing_derived_from_the_secrets(project: Path) -> None:
    """The volumes once carried an unsalted fingerprint of .env's passwords (a weak one was
    recovered from it): a changed .env must leave compose.yaml byte for byte as it was."""
    init(project, "nats", ())
    compose = project / "eda" / "compose.yaml"
    before = compose.read_bytes()
    env_file = project / "eda" / ".env"
    env_file.write_text(env_file.read_text().replace("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=x"))
    assert run_edaenv("render", cwd=project).code == 0
    assert compose.read_bytes() == before
    assert b"\n  postgres-data: {}\n" in before and b"edaenv.secrets" not in before


@pytest.mark.parametrize("api", ["1.41", "1.44"])
@pytest.mark.parametrize("broker", BROKERS)
def test_compose_accepts_the_idle_check_override_of_every_engine(
    project: Path, broker: str, api: str
) -> None:
    """`up` adds it: start_interval for engines with Engine API >= 1.44, the sleeping gate
    before; compose must accept the merged file, checked here for both on this engine."""
    from edaenv.config import load_config
    from edaenv.engine.compose import IDLE_SLEEP_S, engine_override, gate

    init(project, broker, ())
    config = load_config(project / "edaenv.yaml")
    override = project / "eda" / ".generated" / "compose.engine.yaml"
    override.write_text(engine_override(config, api) or "")
    merged = subprocess.run(
        [
            *compose_v2(),
            "-f",
            "eda/compose.yaml",
            "-f",
            str(override),
            "config",
            "--format",
            "json",
        ],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert merged.returncode == 0, merged.stderr
    import json

    services = json.loads(merged.stdout)["services"]
    committed = yaml.safe_load((project / "eda" / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["start_period"] in ("1m0s", "1m30s"), name
        if api == "1.44":
            assert (check["interval"], check["start_interval"]) == ("30s", "1s"), name
        else:  # the committed probe inside the gate (`config` shows `$` escaped again)
            assert check["test"] == gate(committed[name]["healthcheck"]["test"]), name
            assert (check["interval"], check["timeout"]) == ("1s", f"{IDLE_SLEEP_S + 5}s"), name
