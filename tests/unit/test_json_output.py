"""`--json` on the commands that report: one JSON object on stdout, nothing else there."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_edaenv


def test_init_render_and_check_report_as_json(project: Path) -> None:
    init = run_edaenv("init", "--defaults", "--broker", "nats", "--json", cwd=project)
    assert init.code == 0, init.err
    created = json.loads(init.out)
    assert created["project"] == "shop" and created["broker"] == "nats" and created["kept"] == []
    assert {"edaenv.yaml", "eda/compose.yaml", "eda/.env"} <= set(created["created"])

    check = run_edaenv("render", "--check", "--json", cwd=project)
    assert (check.code, json.loads(check.out)) == (0, {"up_to_date": True, "stale": []})
    config = project / "edaenv.yaml"
    config.write_text(config.read_text().replace("offset: 0", "offset: 100"))
    check = run_edaenv("render", "--check", "--json", cwd=project)
    assert (check.code, json.loads(check.out)) == (
        1,
        {"up_to_date": False, "stale": ["eda/compose.yaml"]},
    )
    rendered = run_edaenv("render", "--json", cwd=project)
    assert json.loads(rendered.out) == {
        "compose_file": "eda/compose.yaml",
        "written": ["eda/compose.yaml"],
    }


def test_ci_github_reports_as_json(project: Path) -> None:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    result = run_edaenv("ci", "github", "--install", "pip install edaenv", "--json", cwd=project)
    assert result.code == 0, result.err
    path = project / ".github" / "workflows" / "edaenv-integration.yml"
    assert json.loads(result.out) == {"path": str(path), "warning": None}
    assert path.is_file()


def test_render_stdout_refuses_json_and_check(project: Path) -> None:
    """--stdout prints YAML: with --json or --check it would silently drop one of them."""
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    for flag in ("--json", "--check"):
        result = run_edaenv("render", "--stdout", flag, cwd=project)
        assert (result.code, result.out) == (2, "")
        assert result.err.splitlines() == [
            f"error: --stdout: prints the compose YAML, so it cannot go with {flag}",
            "  hint: drop --stdout, or run `edaenv render --stdout` alone",
        ]
