"""`up` renders the stack only when something it is rendered from changed.

Rendering means importing jinja2 and the renderer: ~70 ms on an idle machine, several times that
on a busy one, all of it before compose can start. A stamp of every input (edaenv.yaml as
parsed, .env, the contracts, the fragments, the renderer's own code) and of the files it wrote
lets an unchanged stack skip it; a generated file edited or deleted by hand is rendered again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from edaenv.config import Config
from edaenv.resources import fragments_dir

PACKAGE = Path(__file__).resolve().parent.parent
STAMP = "render.stamp"


def render_if_changed(config: Config) -> bool:
    """Render and write the stack's files unless the stamp says they are current; True when it
    rendered."""
    stamp = config.generated_dir / STAMP
    inputs = _inputs(config)
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    names = recorded.get("files") or []
    if (
        recorded.get("inputs") == inputs
        and names
        and recorded.get("outputs") == _digest(config.scaffold_dir, names)
    ):
        return False

    from edaenv.stack.render import render_stack, write_files

    files = render_stack(config)
    write_files(config, files)
    names = sorted(files)
    body = {"inputs": inputs, "files": names, "outputs": _digest(config.scaffold_dir, names)}
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(f".{STAMP}.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    tmp.replace(stamp)
    return True


def _inputs(config: Config) -> str:
    # Not repr(config): a frozenset's order changes from one process to the next.
    from edaenv import __version__

    fields = {
        **dataclasses.asdict(config),
        "components": sorted(config.components),
        # An upgrade can change a default image (config.py) with no input of the user's changed.
        "edaenv": __version__,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    sources = [
        *sorted(fragments_dir().rglob("*")),
        *sorted((config.scaffold_dir / "events").glob("*")),
        config.env_file,
        *sorted((PACKAGE / "stack").glob("*.py")),
        *sorted((PACKAGE / "events").glob("*.py")),
        PACKAGE / "config.py",
        PACKAGE / "names.py",
    ]
    for path in sources:
        digest.update(f"\0{path}\0".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _digest(root: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        digest.update(f"\0{name}\0".encode())
        digest.update(path.read_bytes() if path.is_file() else b"\0missing")
    return digest.hexdigest()
