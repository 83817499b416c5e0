"""`edaenv init`: edaenv.yaml, the git-ignored .env, and the user-owned scaffold from templates/.

Nothing is half written: the scaffold is rendered into a temporary directory first, and every
check (config, collisions) runs before the first file lands. No user file is ever overwritten.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edaenv.config import CONFIG_NAME, Config, parse_config, render_config
from edaenv.errors import UsageError
from edaenv.stack.dotenv import fresh_secrets, write_env
from edaenv.stack.resources import templates_dir


@dataclass
class InitPlan:
    target: Path
    project: str
    broker: str | None
    components: frozenset[str]
    port_offset: int
    topic: str | None
    owner: str | None
    interactive: bool
    force: bool
    scaffold: str = "eda"


@dataclass
class InitResult:
    config: Config
    written: list[Path]
    kept: list[Path]


def init(plan: InitPlan) -> InitResult:
    config_path = plan.target / CONFIG_NAME
    if config_path.exists() and not plan.force:
        raise UsageError(
            f"{config_path} already exists",
            hint="edit it and run `edaenv render`, or pass --force to rewrite it "
            "(files you changed in the scaffold are kept)",
        )
    if not plan.interactive and plan.owner is None:
        raise UsageError(
            "question 'owner' (team owning the first event contract) has no "
            "default, and there is no terminal to ask it on",
            hint="pass --owner TEAM, or --defaults to accept suggested answers",
        )
    scaffold_dir = plan.target / plan.scaffold
    if scaffold_dir.exists() and any(scaffold_dir.iterdir()) and not plan.force:
        raise UsageError(
            f"{scaffold_dir} already exists and is not empty",
            hint="move it away, or pass --force to add only the missing files",
        )

    plan.target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edaenv-init-", dir=plan.target) as tmp:
        answers = _copy_template(plan, Path(tmp))
        broker = str(answers["broker"])
        text = render_config(plan.project, broker, plan.components, plan.port_offset, plan.scaffold)
        config = parse_config(text, config_path.resolve(), display=CONFIG_NAME)
        written, kept = _move_tree(Path(tmp), scaffold_dir)

    env_file = config.env_file
    if env_file.exists():
        kept.append(env_file)
    else:
        write_env(env_file, fresh_secrets())
        written.append(env_file)
    config_path.write_text(text, encoding="utf-8")
    written.append(config_path)
    return InitResult(config=config, written=written, kept=kept)


def _copy_template(plan: InitPlan, destination: Path) -> dict[str, object]:
    from copier import run_copy  # heavy: only `init` pays for it

    data: dict[str, object] = {"project": plan.project}
    for key in ("broker", "topic", "owner"):
        value = getattr(plan, key)
        if value is not None:
            data[key] = value
    worker = run_copy(
        str(templates_dir() / "scaffold"),
        str(destination),
        data=data,
        defaults=not plan.interactive,
        quiet=True,
        unsafe=False,
        overwrite=True,
    )
    return dict(worker.answers.combined)


def _move_tree(source: Path, destination: Path) -> tuple[list[Path], list[Path]]:
    """Move every file of source under destination, keeping any file already there."""
    written: list[Path] = []
    kept: list[Path] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        target = destination / path.relative_to(source)
        if target.exists():
            kept.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), target)
        written.append(target)
    return written, kept
