"""The layers of docs/architecture.md, checked on every import in the package: a module never
imports from a layer above its own (lazy imports inside functions included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "edaenv"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def layers() -> list[list[str]]:
    """The layer table of docs/architecture.md, lowest first: `| N | `a`, `b` | ... |`."""
    rows = re.findall(r"^\| (\d+) \| ([^|]+)\|", ARCHITECTURE.read_text(), re.MULTILINE)
    ordered = sorted(rows, key=lambda row: int(row[0]))
    return [re.findall(r"`([a-z_]+)`", names) for _, names in ordered]


def part(module: str) -> str:
    """edaenv.brokers.kafka -> brokers; edaenv.config -> config."""
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "edaenv":
                found += [(node.lineno, f"edaenv.{alias.name}") for alias in node.names]
            elif node.module.startswith("edaenv."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("edaenv.")]
    return found


def violations(rank: dict[str, int]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO).with_suffix("")
        if relative.name == "__init__" and len(relative.parts) == 2:
            continue  # edaenv/__init__.py: the version only
        me = part(".".join(relative.parts))
        for line, module in imports(path):
            other = part(module)
            if other in rank and rank[other] > rank[me]:
                found.append(f"{path.relative_to(REPO)}:{line}: {me} imports {module}")
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    named = {name for layer in layers() for name in layer}
    present = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert present == named


def test_no_layer_imports_a_higher_one() -> None:
    rank = {name: number for number, layer in enumerate(layers()) for name in layer}
    assert violations(rank) == []


def test_the_check_catches_an_upward_import() -> None:
    """Seen failing: with `engine` below `config`, engine's imports of config are upward."""
    rank = {name: number for number, layer in enumerate(layers()) for name in layer}
    rank["engine"] = -1
    assert any(": engine imports edaenv.config" in v for v in violations(rank))
