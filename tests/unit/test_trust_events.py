"""Event commands check what can fail cheaply before the expensive work."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_edaenv


def test_seed_checks_the_broker_before_generating_events(project: Path) -> None:
    """Ten million events take minutes to generate: an unreachable broker must fail first."""
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    result = run_edaenv(
        "seed",
        "OrderPlaced",
        "--count",
        "10000000",
        cwd=project,
        env={"EDAENV_BROKER_URL": "127.0.0.1:1"},
        timeout=60,
    )
    assert result.code == 3, result.err
    assert "cannot reach kafka at 127.0.0.1:1" in result.err
