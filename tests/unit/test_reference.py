"""docs/reference.md is what the CLI says about itself."""

from __future__ import annotations

from edaenv.cli.reference import render_reference
from tests.conftest import REPO


def test_the_command_reference_matches_the_cli() -> None:
    committed = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == render_reference(), (
        "docs/reference.md is stale: run `python -m edaenv.cli.reference > docs/reference.md`"
    )


def test_the_reference_names_every_command() -> None:
    text = render_reference()
    for command in ("init", "render", "up", "down", "status", "publish", "seed", "tail", "relay"):
        assert f"## `edaenv {command}`" in text
    assert "### `edaenv dlq list`" in text and "### `edaenv inject kill`" in text
