"""The layers of docs/architecture.md, checked on every import in the package: a module never
imports from a layer above its own (lazy imports inside functions included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

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


# --- brokers are told apart in one place ---------------------------------------------------

# The switches on a broker name that stay outside edaenv/brokers/registry.py, and why. Each
# renders a broker's own configuration file from a stack-layer template with the secrets of
# .env; moving them means rendering every fragment's config files generically.
ALLOWED_SWITCHES = {
    ("edaenv/stack/render.py", 'if config.broker == "nats":'),
    ("edaenv/stack/render.py", 'if config.broker == "rabbitmq":'),
}


def broker_switches(source: str) -> list[int]:
    """Lines comparing something with a broker's name (`==`, `!=`, `in`, `not in`)."""
    from edaenv.config import BROKERS

    def names_a_broker(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in BROKERS
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(names_a_broker(element) for element in node.elts)
        return False

    return sorted(
        {
            node.lineno
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Compare)
            and any(names_a_broker(side) for side in [node.left, *node.comparators])
        }
    )


def switches_outside_the_registry(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = str(path.relative_to(package.parent))
        if relative == "edaenv/brokers/registry.py":
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for number in broker_switches("\n".join(lines)):
            line = lines[number - 1].strip()
            if (relative, line) not in ALLOWED_SWITCHES:
                found.append(f"{relative}:{number}: {line}")
    return found


def test_only_the_registry_tells_brokers_apart() -> None:
    assert switches_outside_the_registry(PACKAGE) == []


@pytest.mark.parametrize(
    "source",
    [
        'if config.broker == "kafka":\n    pass',
        'kafka_like = broker in ("kafka", "redpanda")',
        'other = "nats" != endpoint.broker',
        'if name not in ["rabbitmq"]:\n    pass',
    ],
)
def test_the_check_catches_a_broker_switch(source: str, tmp_path: Path) -> None:
    """Seen failing: the same snippet in any module of a package is reported."""
    (tmp_path / "edaenv" / "cli").mkdir(parents=True)
    (tmp_path / "edaenv" / "cli" / "new.py").write_text("x = 1\n" + source + "\n")
    [reported] = switches_outside_the_registry(tmp_path / "edaenv")
    assert reported.startswith("edaenv/cli/new.py:2: ")


def test_comparisons_with_other_words_are_no_switch() -> None:
    assert broker_switches('if kind == "kill" or role in ("broker", "relay"):\n    pass') == []
