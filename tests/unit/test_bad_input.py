"""Every bad input of the foundation: exact message, location and hint, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_edaenv

GOOD = """\
version: 1
project: shop
broker: kafka
components:
  grafana: true
ports:
  offset: 0
"""


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.parts
    }


@pytest.fixture
def initialised(project: Path) -> Path:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    return project


CONFIG_CASES = [
    (
        "malformed YAML",
        "project: shop\nbroker: [kafka\n",
        "error: edaenv.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>'\n"
        "  hint: fix the YAML syntax (indentation, colons, quotes) at that line\n",
    ),
    (
        "key without its colon",
        "project: shop\nbroker kafka\nscaffold: eda\n",
        "error: edaenv.yaml:2: not valid YAML: could not find expected ':'\n"
        "  hint: fix the YAML syntax (indentation, colons, quotes) at that line\n",
    ),
    (
        "unclosed quote",
        'project: "shop\nbroker: kafka\n',
        "error: edaenv.yaml:1: not valid YAML: found unexpected end of stream\n"
        "  hint: fix the YAML syntax (indentation, colons, quotes) at that line\n",
    ),
    (
        "unknown key",
        "project: shop\nbrokr: kafka\n",
        "error: edaenv.yaml:2: unknown key 'brokr' in the top level\n"
        "  hint: did you mean 'broker'? allowed keys: version, project, broker, components, ports, "
        "images, scaffold\n",
    ),
    (
        "wrong type",
        "project: shop\nports:\n  offset: ten\n",
        "error: edaenv.yaml:3: 'ports.offset' must be an integer, got a string 'ten'\n"
        "  hint: write e.g. `offset: 100` to move every port up by 100\n",
    ),
    (
        "unknown broker",
        "project: shop\nbroker: kafak\n",
        "error: edaenv.yaml:2: unknown broker 'kafak'\n"
        "  hint: use one of: kafka, redpanda, rabbitmq, nats\n",
    ),
    (
        "unknown component",
        "project: shop\ncomponents:\n  postgress: true\n",
        "error: edaenv.yaml:3: unknown key 'postgress' in 'components'\n"
        "  hint: did you mean 'postgres'? allowed keys: postgres, outbox, consumer, jaeger, "
        "prometheus, grafana\n",
    ),
    (
        "port out of range",
        "project: shop\nports:\n  offset: 60000\n",
        "error: edaenv.yaml:3: port of broker.kafka is 69092 after the offset 60000, "
        "outside 1-65535\n"
        "  hint: choose a smaller `ports.offset` or another port\n",
    ),
    (
        "ports collide",
        "project: shop\nports:\n  postgres: 9092\n",
        "error: edaenv.yaml:3: port 9092 is used by both broker.kafka and postgres.postgres\n"
        "  hint: give one of them another port under `ports:`\n",
    ),
    (
        "missing dependency",
        "project: shop\ncomponents:\n  prometheus: false\n",
        "error: edaenv.yaml:3: component 'grafana' needs 'prometheus', which is off\n"
        "  hint: turn on `prometheus: true` or turn off `grafana: false`\n",
    ),
    (
        "bad project name",
        "project: My Shop\n",
        "error: edaenv.yaml:1: 'My Shop' cannot be a compose project name\n"
        "  hint: use lowercase letters, digits, '-' and '_' (at most 63), starting with a "
        "letter or digit, e.g. 'my-shop'\n",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config(initialised: Path, text: str, expected: str) -> None:
    (initialised / "edaenv.yaml").write_text(text)
    before = snapshot(initialised)
    result = run_edaenv("render", cwd=initialised)
    assert (result.code, result.err) == (2, expected)
    assert snapshot(initialised) == before


INIT_CASES = [
    (
        "unknown broker",
        ["--broker", "kafak"],
        "error: --broker: unknown broker 'kafak'\n"
        "  hint: use one of: kafka, redpanda, rabbitmq, nats\n",
    ),
    (
        "unknown component",
        ["--without", "graphana"],
        "error: --without: unknown component 'graphana'\n"
        "  hint: components: postgres, outbox, consumer, jaeger, prometheus, grafana\n",
    ),
    (
        "missing dependency",
        ["--without", "postgres"],
        "error: component 'consumer' needs 'postgres'\n"
        "  hint: drop --without postgres, or add --without consumer\n",
    ),
    (
        "bad project name",
        ["--name", "Shop!"],
        "error: --name: 'Shop!' cannot be a compose project name\n"
        "  hint: use lowercase letters, digits, '-' and '_' (at most 63), starting with a "
        "letter or digit, e.g. 'shop'\n",
    ),
]


@pytest.mark.parametrize(
    ("args", "expected"), [c[1:] for c in INIT_CASES], ids=[c[0] for c in INIT_CASES]
)
def test_bad_init(project: Path, args: list[str], expected: str) -> None:
    result = run_edaenv("init", "--defaults", *args, cwd=project)
    assert (result.code, result.err) == (2, expected)
    assert snapshot(project) == {}


def test_init_refuses_an_existing_config(initialised: Path) -> None:
    before = snapshot(initialised)
    result = run_edaenv("init", "--defaults", cwd=initialised)
    assert result.code == 2
    assert result.err == (
        f"error: {initialised / 'edaenv.yaml'} already exists\n"
        "  hint: edit it and run `edaenv render`, or pass --force to rewrite it (files you "
        "changed in the scaffold are kept)\n"
    )
    assert snapshot(initialised) == before


def test_init_without_terminal_or_defaults_asks_nothing(project: Path) -> None:
    result = run_edaenv("init", cwd=project, input="")
    assert result.code == 2
    assert result.err == (
        "error: question 'owner' (team owning the first event contract) has no default, and "
        "there is no terminal to ask it on\n"
        "  hint: pass --owner TEAM, or --defaults to accept suggested answers\n"
    )
    assert snapshot(project) == {}


def test_force_keeps_user_files(initialised: Path) -> None:
    contract = initialised / "eda" / "events" / "OrderPlaced.v1.schema.json"
    contract.write_text(contract.read_text().replace("orders", "orders-v2"))
    env_before = (initialised / "eda" / ".env").read_text()
    result = run_edaenv("init", "--defaults", "--force", "--broker", "nats", cwd=initialised)
    assert result.code == 0, result.err
    assert "orders-v2" in contract.read_text()
    assert (initialised / "eda" / ".env").read_text() == env_before
    assert "broker: nats" in (initialised / "edaenv.yaml").read_text()
