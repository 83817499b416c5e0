"""`edaenv init`: edaenv.yaml, the git-ignored .env, the user-owned scaffold from templates/, and
the stack's first render.

All or nothing: every name is checked against its grammar first; the scaffold is rendered from
the copier template into a preview outside the repository, the stack rendered from that
preview, and only then is everything written in one `commit_files`. A Ctrl-C, a full disk or
a read-only repository leaves the repository as it was. No user file is ever overwritten.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from edaenv import names
from edaenv.config import BROKERS, COMPONENTS, CONFIG_NAME, Config, parse_config, render_config
from edaenv.errors import UsageError
from edaenv.resources import templates_dir
from edaenv.stack.dotenv import fresh_secrets, write_env
from edaenv.stack.files import commit_files, file_error


@dataclass
class InitPlan:
    target: Path
    project: str
    broker: str = "kafka"
    components: frozenset[str] = frozenset(COMPONENTS)
    port_offset: int = 0
    topic: str = "orders"
    owner: str | None = None  # no default: nobody was asked
    force: bool = False
    scaffold: str = "eda"


@dataclass
class InitResult:
    config: Config
    written: list[Path]
    kept: list[Path]


def check_plan(plan: InitPlan) -> None:
    """Each value against its grammar (edaenv/names.py): they reach JSON, Python and YAML."""
    if plan.broker not in BROKERS:
        raise UsageError(
            f"unknown broker {names.shown(plan.broker)}",
            where="--broker",
            hint=f"use one of: {', '.join(BROKERS)}",
        )
    names.check_project(plan.project, where="--name")
    names.check_topic(plan.topic, where="--topic")
    if plan.owner is None:
        raise UsageError(
            "question 'owner' (team owning the first event contract) has no "
            "default, and there is no terminal to ask it on",
            hint="pass --owner TEAM, or --defaults to accept suggested answers",
        )
    names.check_owner(plan.owner, where="--owner")
    names.check_scaffold(plan.scaffold, where="scaffold")


def init(plan: InitPlan) -> InitResult:
    check_plan(plan)
    if plan.target.exists() and not plan.target.is_dir():
        raise UsageError(
            "is not a directory",
            where=str(plan.target),
            hint="give `edaenv init` the repository's directory (or a new one to create)",
        )
    config_path = plan.target / CONFIG_NAME
    if config_path.exists() and not plan.force:
        raise UsageError(
            f"{config_path} already exists",
            hint="edit it and run `edaenv render`, or pass --force to rewrite it "
            "(files you changed in the scaffold are kept)",
        )
    scaffold_dir = plan.target / plan.scaffold
    if scaffold_dir.is_dir() and any(scaffold_dir.iterdir()) and not plan.force:
        raise UsageError(
            f"{scaffold_dir} already exists and is not empty",
            hint="move it away, or pass --force to add only the missing files",
        )
    text = render_config(
        plan.project, plan.broker, plan.components, plan.port_offset, plan.scaffold
    )
    config = parse_config(text, config_path, display=CONFIG_NAME)
    try:
        files, kept = _new_files(plan, config, text)
        from edaenv.stack.render import NATS_CONFIG

        private = {config.env_file: 0o600, config.scaffold_dir / NATS_CONFIG: 0o600}
        written = commit_files(files, staging=plan.target, modes=private)
    except OSError as exc:
        raise file_error(exc) from None
    return InitResult(config=config, written=written, kept=kept)


def _new_files(plan: InitPlan, config: Config, text: str) -> tuple[dict[Path, bytes], list[Path]]:
    """What init adds to the repository (target -> content), and the user's files it keeps.

    The scaffold and the stack are rendered in a preview laid out like the repository: the
    render reads the contracts and .env from the scaffold, which are not written yet."""
    from edaenv.stack.render import render_stack

    files: dict[Path, bytes] = {}
    kept: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="edaenv-init-") as tmp:
        preview = replace(config, path=Path(tmp) / CONFIG_NAME)
        template = _copy_template(plan, preview.scaffold_dir)
        _copy_user_files(config.scaffold_dir, preview.scaffold_dir)
        if not preview.env_file.exists():
            write_env(preview.env_file, fresh_secrets())
        for rel in [*template, Path(".env")]:
            target = config.scaffold_dir / rel
            if target.exists():
                kept.append(target)
            else:
                files[target] = (preview.scaffold_dir / rel).read_bytes()
        files[config.path] = text.encode("utf-8")
        for name, content in render_stack(preview).items():
            target, data = config.scaffold_dir / name, content.encode("utf-8")
            if not target.is_file() or target.read_bytes() != data:
                files[target] = data
    return files, kept


def _copy_template(plan: InitPlan, destination: Path) -> list[Path]:
    """Render the copier template with every answer given; returns the files it wrote."""
    from copier import run_copy  # heavy: only `init` pays for it

    run_copy(
        str(templates_dir() / "scaffold"),
        str(destination),
        data={
            "project": plan.project,
            "broker": plan.broker,
            "topic": plan.topic,
            "owner": plan.owner,
        },
        defaults=True,
        quiet=True,
        unsafe=False,
        overwrite=True,
    )
    return sorted(p.relative_to(destination) for p in destination.rglob("*") if p.is_file())


def _copy_user_files(scaffold_dir: Path, preview_dir: Path) -> None:
    """With --force, the render must see the user's contracts and secrets, not the template's:
    they are the inputs it reads from the scaffold."""
    events = scaffold_dir / "events"
    if events.is_dir():
        shutil.copytree(events, preview_dir / "events", dirs_exist_ok=True)
    if (scaffold_dir / ".env").is_file():
        shutil.copy2(scaffold_dir / ".env", preview_dir / ".env")
