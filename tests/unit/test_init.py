"""`edaenv init` in an empty git repository: what it writes, and what it keeps out of git."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from edaenv.verify.scenario import find_scenarios
from tests.conftest import run_edaenv


def test_init_then_render_check_is_clean(project: Path) -> None:
    result = run_edaenv("init", "--defaults", cwd=project)
    assert result.code == 0, result.err
    assert "edaenv initialised for 'shop' with kafka" in result.err
    assert run_edaenv("render", "--check", cwd=project).code == 0

    contract = json.loads((project / "eda/events/OrderPlaced.v1.schema.json").read_text())
    assert contract["x-edaenv"] == {
        "event": "OrderPlaced",
        "version": 1,
        "topic": "orders",
        "key": "orderId",
        "aggregate": "Order",
        "owner": "shop-team",
    }
    assert set(contract["required"]) == {"orderId", "customerId", "total"}

    # `edaenv verify`'s scenarios land in the scaffold, each loadable, with their schema.
    scenarios = find_scenarios(project / "eda/scenarios", [])
    assert [s.name for s in scenarios] == [
        "broker-restart",
        "consumer-crash",
        "duplicates",
        "partition",
        "poison",
        "relay-crash",
    ]
    assert (project / "eda/scenarios/scenario.schema.json").is_file()
    # The answers only: no path of the machine that ran init (the file is committed).
    assert (project / "eda/.copier-answers.yml").read_text() == (
        "# The answers `edaenv init` gave copier for this scaffold (no machine path: safe to "
        "commit).\nbroker: kafka\nowner: shop-team\nproject: shop\ntopic: orders\n"
    )


def test_secrets_are_fresh_private_and_git_ignored(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for repo in (project, other):
        assert run_edaenv("init", "--defaults", cwd=repo).code == 0
    env = (project / "eda/.env").read_text()
    assert env != (other / "eda/.env").read_text()
    assert stat.S_IMODE((project / "eda/.env").stat().st_mode) == 0o600
    passwords = [line.split("=", 1)[1] for line in env.splitlines() if "PASSWORD=" in line]
    assert len(passwords) == 4 and all(len(p) >= 20 for p in passwords)

    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "eda/.env" not in tracked
    assert not [path for path in tracked if path.startswith("eda/.generated/")]
    assert "eda/compose.yaml" in tracked and "edaenv.yaml" in tracked


def test_scaffold_lives_under_one_directory(project: Path) -> None:
    (project / "README.md").write_text("mine\n")
    assert run_edaenv("init", "--defaults", "--name", "shop-local", cwd=project).code == 0
    top = sorted(p.name for p in project.iterdir() if p.name != ".git")
    assert top == ["README.md", "eda", "edaenv.yaml"]
    assert (project / "README.md").read_text() == "mine\n"
    assert "name: shop-local\n" in (project / "eda/compose.yaml").read_text()


def test_init_in_a_new_directory_names_the_project_after_it(tmp_path: Path) -> None:
    result = run_edaenv("init", "--defaults", "My Service.v2", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "project: my-service-v2" in (tmp_path / "My Service.v2" / "edaenv.yaml").read_text()


def test_up_renders_again_only_when_an_input_or_output_changed(project: Path) -> None:
    """`up` skips rendering when its stamp matches, also in another process (another hash seed,
    so sets iterate in another order)."""
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    script = (
        "from pathlib import Path\n"
        "from edaenv.config import load_config\n"
        "from edaenv.engine.rendering import render_if_changed\n"
        "print(render_if_changed(load_config(Path('edaenv.yaml'))))\n"
    )

    def rendered(seed: int) -> bool:
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip() == "True"

    rendered(1)
    assert [rendered(seed) for seed in (2, 3, 4)] == [False, False, False]
    env_file = project / "eda/.env"
    env_file.write_text(env_file.read_text() + "# edited\n")
    assert rendered(5) and not rendered(6)
    compose = project / "eda/compose.yaml"
    compose.write_text(compose.read_text() + "# edited by hand\n")
    assert rendered(7) and not rendered(8)


def test_an_upgraded_edaenv_renders_again(project: Path) -> None:
    """An upgrade may change a default image with no input of the user's changed: the stamp
    covers edaenv's version and the modules holding the defaults."""
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import edaenv\n"
        "edaenv.__version__ = sys.argv[1]\n"
        "from edaenv.config import load_config\n"
        "from edaenv.engine.rendering import render_if_changed\n"
        "print(render_if_changed(load_config(Path('edaenv.yaml'))))\n"
    )

    def rendered(version: str) -> bool:
        out = subprocess.run(
            [sys.executable, "-c", script, version], cwd=project, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip() == "True"

    rendered("1.0")
    assert not rendered("1.0")
    assert rendered("1.1") and not rendered("1.1")
