"""edaenv.service, the public API for code that runs in the stack: the scaffolded consumer uses
nothing else of edaenv, importing it loads no client library, every public name is documented,
and the consumer's parser dead-letters exactly what breaks the event's contract."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import keyword
import re
import subprocess
import sys
import textwrap
import types
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv import service

PUBLIC = "edaenv.service"
# Imported only when a service uses them: the broker clients, the database driver, tracing.
CLIENTS = {"confluent_kafka", "pika", "nats", "psycopg", "opentelemetry"}


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scaffold as `edaenv init` renders it for a user."""
    root = tmp_path_factory.mktemp("repo")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(
        [sys.executable, "-m", "edaenv", "init", "--defaults"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    return root / "eda"


@pytest.fixture(scope="module")
def consumer(scaffold: Path) -> Any:
    spec = importlib.util.spec_from_file_location("sample_consumer", scaffold / "consumer/main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the consumer imports only the public API ------------------------------------------------


def _is_edaenv(name: str) -> bool:
    return name == "edaenv" or name.startswith("edaenv.")


def internal_imports(source: str) -> list[str]:
    """Each statement of `source` that imports edaenv other than through edaenv.service, as
    'line N: <statement>' (static imports, importlib.import_module and __import__)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            prefix = f"{node.module}." if node.module == "edaenv" else ""
            names = [prefix + alias.name for alias in node.names] if prefix else [node.module]
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("__import__", "import_module", "importlib.import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        if any(_is_edaenv(name) and name != PUBLIC for name in names):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda line: int(line.split(":")[0].split()[1]))


def test_the_scaffolded_consumer_imports_only_the_public_api(scaffold: Path) -> None:
    modules = sorted((scaffold / "consumer").glob("*.py"))
    assert [m.name for m in modules] == ["main.py"]
    for module in modules:
        source = module.read_text(encoding="utf-8")
        assert internal_imports(source) == [], module
        assert "from edaenv import service" in source.splitlines()


OLD_CONSUMER_IMPORTS = """\
import psycopg

from edaenv.brokers.base import Broker, Delivery
from edaenv.errors import EdaenvError
from edaenv.events.topology import consumer_group
from edaenv.outbox import dlq, tracing
from edaenv.outbox.metrics import ConsumerMetrics, serve
from edaenv.outbox.runtime import DATABASE_OPTIONS, connect_broker, from_env
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from edaenv import service\n", []),
        ("import edaenv.service as s\nfrom edaenv.service import Settings, claim_new\n", []),
        ("import edaenvx\nfrom edaenv_tools import x\nimport json\n", []),
        (
            OLD_CONSUMER_IMPORTS,  # the consumer before edaenv.service
            [
                "line 3: from edaenv.brokers.base import Broker, Delivery",
                "line 4: from edaenv.errors import EdaenvError",
                "line 5: from edaenv.events.topology import consumer_group",
                "line 6: from edaenv.outbox import dlq, tracing",
                "line 7: from edaenv.outbox.metrics import ConsumerMetrics, serve",
                "line 8: from edaenv.outbox.runtime import DATABASE_OPTIONS, connect_broker, "
                "from_env",
            ],
        ),
        ("import edaenv\n", ["line 1: import edaenv"]),
        ("from edaenv import service, errors\n", ["line 1: from edaenv import service, errors"]),
        ("from edaenv import *\n", ["line 1: from edaenv import *"]),
        (
            "from edaenv.service._events import claim_new\n",  # private module of the API
            ["line 1: from edaenv.service._events import claim_new"],
        ),
        (
            "def main():\n    from edaenv.outbox import dlq\n",
            ["line 2: from edaenv.outbox import dlq"],
        ),
        (
            "import importlib\nkafka = importlib.import_module('edaenv.brokers.kafka')\n",
            ["line 2: importlib.import_module('edaenv.brokers.kafka')"],
        ),
        ("m = __import__('edaenv.outbox')\n", ["line 1: __import__('edaenv.outbox')"]),
    ],
)
def test_the_import_check_catches_internal_imports(source: str, expected: list[str]) -> None:
    assert internal_imports(source) == expected


identifier = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: not keyword.iskeyword(name)
)


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(identifier, max_size=3), form=st.sampled_from(["import", "from", "call"]))
@example(parts=["service"], form="import")
@example(parts=["service", "_connect"], form="from")
def test_only_edaenv_service_passes_the_import_check(parts: list[str], form: str) -> None:
    module = ".".join(["edaenv", *parts])
    source = {
        "import": f"import {module}\n",
        "from": f"from {module} import name\n",
        "call": f"importlib.import_module({module!r})\n",
    }[form]
    assert bool(internal_imports(source)) == (module != PUBLIC)


# --- import-light ----------------------------------------------------------------------------


def top_level_modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_importing_the_api_loads_no_client_library() -> None:
    assert top_level_modules_after("import edaenv.service") & CLIENTS == set()


def test_the_client_check_sees_a_client_when_one_is_imported() -> None:
    loaded = top_level_modules_after("from edaenv import service\nimport edaenv.brokers.kafka")
    assert loaded & CLIENTS == {"confluent_kafka"}


# --- every public name exists and is documented ----------------------------------------------


def undocumented(module: types.ModuleType) -> list[str]:
    """Names of `__all__` that are missing, not named in the module's docstring, or (when the
    package defines them) without a docstring of their own."""
    doc = module.__doc__ or ""
    problems = []
    for name in module.__all__:
        if not hasattr(module, name):
            problems.append(f"{name}: missing")
            continue
        value = getattr(module, name)
        if f"`{name}" not in doc and f" {name}" not in doc and f"[{name}" not in doc:
            problems.append(f"{name}: not in the module's documentation")
        own = getattr(value, "__module__", "").startswith(module.__name__)
        doc_of = (value.__doc__ or "").strip()
        if (
            own
            and (inspect.isclass(value) or inspect.isfunction(value))
            and (not doc_of or doc_of.startswith(f"{name}("))  # a dataclass's made-up one
        ):
            problems.append(f"{name}: no docstring")
    return problems


def test_every_public_name_exists_and_is_documented() -> None:
    assert undocumented(service) == []
    public = {
        name
        for name, value in vars(service).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(service.__all__)
    assert len(service.__all__) == len(set(service.__all__))


def test_the_documented_example_uses_only_the_public_api() -> None:
    doc = service.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1])
    compile(example, "edaenv.service example", "exec")
    used = set(re.findall(r"service\.(\w+)", example))
    assert used and used <= set(service.__all__)
    assert internal_imports(example) == []


def test_the_documentation_check_catches_a_gap() -> None:
    module = types.ModuleType("edaenv.service", "Offers `documented()` and `gone`.")

    def documented() -> None:
        """Documented."""

    def bare() -> None:
        pass

    documented.__module__ = bare.__module__ = "edaenv.service"
    module.__dict__.update(documented=documented, bare=bare)
    module.__all__ = ["documented", "bare", "gone"]  # type: ignore[attr-defined]
    assert undocumented(module) == [
        "bare: not in the module's documentation",
        "bare: no docstring",
        "gone: missing",
    ]


# --- Settings from the stack's environment ---------------------------------------------------

STACK = {
    "EDAENV_BROKER": "rabbitmq",
    "EDAENV_BROKER_URL": "amqp://u:p@broker:5672/%2F",
    "EDAENV_DATABASE_URL": "postgresql://u:p@postgres:5432/app",
}
OPTIONAL = (
    "EDAENV_PROJECT",
    "EDAENV_COMPOSE_PROJECT",
    "OTEL_SERVICE_NAME",
    "EDAENV_METRICS_PORT",
    "EDAENV_METRICS_HOST",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*STACK, *OPTIONAL):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_from_the_stacks_environment(env: pytest.MonkeyPatch) -> None:
    for name, value in {
        **STACK,
        "EDAENV_PROJECT": "shop",
        "OTEL_SERVICE_NAME": "consumer",
        "EDAENV_METRICS_PORT": "9465",
        "EDAENV_METRICS_HOST": "0.0.0.0",
    }.items():
        env.setenv(name, value)
    settings = service.Settings.from_env()
    assert settings == service.Settings(
        broker="rabbitmq",
        broker_url="amqp://u:p@broker:5672/%2F",
        database_url="postgresql://u:p@postgres:5432/app",
        project="shop",
        service_name="consumer",
        metrics_port=9465,
        metrics_host="0.0.0.0",
    )
    assert settings.consumer_group == "shop-consumer"


def test_settings_from_edaenv_env_on_the_host(env: pytest.MonkeyPatch) -> None:
    """`edaenv env` names the project EDAENV_COMPOSE_PROJECT and sets no metrics port."""
    for name, value in {**STACK, "EDAENV_COMPOSE_PROJECT": "shop"}.items():
        env.setenv(name, value)
    settings = service.Settings.from_env()
    assert (settings.project, settings.consumer_group) == ("shop", "shop-consumer")
    assert (settings.service_name, settings.metrics_port, settings.metrics_host) == (
        "consumer",
        None,
        "127.0.0.1",
    )


def test_settings_name_the_missing_variables(env: pytest.MonkeyPatch) -> None:
    env.setenv("EDAENV_BROKER", "kafka")
    with pytest.raises(service.EdaenvError) as raised:
        service.Settings.from_env()
    assert str(raised.value) == "EDAENV_BROKER_URL, EDAENV_DATABASE_URL not set"
    assert raised.value.hint


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "9465 ", "٣"])
def test_settings_refuse_a_metrics_port_that_is_not_one(env: pytest.MonkeyPatch, port: str) -> None:
    for name, value in {**STACK, "EDAENV_METRICS_PORT": port}.items():
        env.setenv(name, value)
    with pytest.raises(service.EdaenvError) as raised:
        service.Settings.from_env()
    assert str(raised.value) == f"EDAENV_METRICS_PORT: {port!r} is not a port number"
    assert raised.value.hint == "set it to a port from 1 to 65535, or leave it unset for no metrics"


# --- deliveries: identity and time -----------------------------------------------------------


def delivery(
    value: bytes = b"{}",
    attributes: dict[str, str] | None = None,
    position: dict[str, Any] | None = None,
) -> service.Delivery:
    return service.Delivery(
        topic="orders",
        key="order-1",
        value=value,
        attributes=attributes if attributes is not None else {"id": "e-1"},
        headers={},
        position=position or {"partition": 2, "offset": 7},
    )


def test_event_id_is_the_cloudevents_id_else_a_hash_of_key_and_data() -> None:
    assert service.event_id(delivery(attributes={"id": "e-1"})) == "e-1"
    digest = hashlib.sha256(b"order-1\0{}").hexdigest()
    assert service.event_id(delivery(attributes={})) == f"sha256:{digest}"
    # Redelivered (RabbitMQ: with a new delivery tag), it is the same event.
    assert service.event_id(
        delivery(attributes={}, position={"queue": "q", "tag": 1})
    ) == service.event_id(delivery(attributes={}, position={"queue": "q", "tag": 2}))
    assert service.event_id(delivery(b'{"a": 1}', {})) != service.event_id(delivery(b"{}", {}))


# Fixed offsets, as an RFC 3339 timestamp carries (a zone's name it does not).
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=100, deadline=None)
@given(when=st.datetimes(timezones=offsets))
def test_event_time_reads_the_cloudevents_time(when: datetime) -> None:
    assert service.event_time(delivery(attributes={"time": when.isoformat()})) == when


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=30))
@example(text="2024-05-01T10:00:00")  # no offset: UTC, as CloudEvents (RFC 3339) means it
@example(text="yesterday")
def test_event_time_is_a_moment_or_none(text: str) -> None:
    sent = service.event_time(delivery(attributes={"time": text}))
    assert sent is None or sent.tzinfo is not None
    if text == "2024-05-01T10:00:00":
        assert sent == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert service.event_time(delivery(attributes={})) is None


def test_event_time_keeps_the_offset() -> None:
    sent = service.event_time(delivery(attributes={"time": "2024-05-01T12:00:00+02:00"}))
    assert sent == datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert sent == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_invalid_event_has_its_public_name_in_dead_letters() -> None:
    error = service.InvalidEvent("total is missing")
    assert f"{type(error).__module__}.{type(error).__qualname__}" == "edaenv.service.InvalidEvent"


# --- the consumer's parser: dead-letters what breaks the contract, and only that -----------


@pytest.fixture(scope="module")
def contract(scaffold: Path) -> Any:
    schema = json.loads((scaffold / "events/OrderPlaced.v1.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def relaxed(scaffold: Path) -> Any:
    """The contract less what the consumer tolerates on purpose: unknown fields (a later minor
    version may add some), an orderId that is not a UUID, a customerId longer than 64."""
    schema = json.loads((scaffold / "events/OrderPlaced.v1.schema.json").read_text())
    schema.pop("additionalProperties")
    schema["properties"]["orderId"] = {"type": "string", "minLength": 1}
    del schema["properties"]["customerId"]["maxLength"]
    return jsonschema.validators.validator_for(schema)(schema)


def parsed(consumer: Any, value: bytes) -> Any:
    """The consumer's order, or the InvalidEvent message; any other exception escapes."""
    try:
        return consumer.parse(delivery(value))
    except service.InvalidEvent as exc:
        return str(exc)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
valid_order = st.fixed_dictionaries(
    {
        "orderId": st.uuids().map(str),
        "customerId": st.text(min_size=1, max_size=64),
        "total": st.integers(0, 10**6) | st.floats(0, 1e6),
    }
)


@st.composite
def order_data(draw: st.DrawFn) -> Any:
    data: dict[str, Any] = draw(valid_order)
    for name in ("orderId", "customerId", "total"):
        change = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace"]))
        if change == "drop":
            del data[name]
        elif change == "replace":
            data[name] = draw(json_values)
    if draw(st.booleans()):
        data[draw(st.sampled_from(["note", "edaenvPoison"]))] = draw(json_values)
    return data


@settings(max_examples=300, deadline=None)
@given(data=order_data() | json_values)
@example(data={"orderId": "o-1", "customerId": "c", "total": True})  # bool is not a number
@example(data={"orderId": "", "customerId": "c", "total": 1})
@example(data={"orderId": "o-1", "customerId": "c", "total": 1e6 + 0.5})
@example(data={"orderId": "o-1", "customerId": {"edaenv": "poison"}, "total": 1})
def test_parse_accepts_what_the_contract_accepts_and_dead_letters_the_rest(
    consumer: Any, contract: Any, relaxed: Any, data: Any
) -> None:
    result = parsed(consumer, json.dumps(data).encode())
    if contract.is_valid(data):  # never a valid event in the dead letters
        assert not isinstance(result, str), result
    if not relaxed.is_valid(data):  # never an event that breaks it handled
        assert isinstance(result, str)
    if not isinstance(result, str):
        assert (result.order_id, result.customer_id) == (data["orderId"], data["customerId"])
        assert result.total == Decimal(repr(data["total"]))
        assert result.event_id == "e-1"


@settings(max_examples=100, deadline=None)
@given(total=st.decimals(min_value=0, max_value=999_999, allow_nan=False, allow_infinity=False))
@example(total=Decimal("0.1"))
@example(total=Decimal("1234.5678901234567891"))
def test_parse_keeps_money_exact(consumer: Any, total: Decimal) -> None:
    value = f'{{"orderId": "o-1", "customerId": "c-1", "total": {total}}}'.encode()
    order = consumer.parse(delivery(value))
    assert isinstance(order.total, Decimal) and order.total == total
    assert str(order.total) == str(total)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x00{not json: edaenv poison", "the data is not JSON: Expecting value: line 1 column 1"),
        (b"\xff\xfe", "the data is not JSON: 'utf-8' codec can't decode byte 0xff"),
        (b'{"orderId": "o", "customerId": "c", "total": NaN}', "total must be a number, not NaN"),
        (b"[1, 2]", "the data is not a JSON object"),
        (
            b'{"orderId": "o", "customerId": "c", "total": {"edaenv": 1.5}}',
            'total must be a number, not {"edaenv": "1.5"}',
        ),
        (b'{"orderId": "o", "customerId": "c", "total": true}', "total must be a number, not true"),
        (
            b'{"orderId": "o", "customerId": "c", "total": 1000000.01}',
            "total must be from 0 to 1000000, not 1000000.01",
        ),
        (b'{"orderId": "o", "customerId": "c"}', "total is missing"),
        (b'{"customerId": "c", "total": 1}', "orderId is missing"),
        (
            b'{"orderId": "o", "customerId": "", "total": 1}',
            "orderId and customerId must be non-empty strings",
        ),
        (
            b'{"orderId": "o", "customerId": "c", "total": -1.0}',
            "total must be from 0 to 1000000, not -1.0",
        ),
        (
            b'{"orderId": "o", "customerId": "c", "total": "12"}',
            'total must be a number, not "12"',
        ),
    ],
)
def test_parse_says_what_is_wrong(consumer: Any, value: bytes, message: str) -> None:
    result = parsed(consumer, value)
    assert isinstance(result, str) and result.startswith(message), result


# --- the scaffold's README says what the relay image runs ------------------------------------


def relay_mismatch(readme: str, dockerfile: str) -> str | None:
    """What is wrong when the README's `relay/` row does not name the command the relay image
    runs (its CMD, `python3 -m MODULE`); None when it does."""
    cmd = json.loads(next(line for line in dockerfile.splitlines() if line.startswith("CMD "))[4:])
    if cmd[1:2] != ["-m"]:
        return f"the relay image runs {cmd}, not a module"
    row = next(line for line in readme.splitlines() if line.startswith("| `relay/` |"))
    if f"`python -m {cmd[2]}`" not in row:
        return f"the README says {row!r}; the image runs `python -m {cmd[2]}`"
    return None


def test_the_readme_names_what_the_relay_image_runs(scaffold: Path) -> None:
    readme = (scaffold / "README.md").read_text(encoding="utf-8")
    dockerfile = (scaffold / "relay" / "Dockerfile").read_text(encoding="utf-8")
    assert relay_mismatch(readme, dockerfile) is None


def test_the_relay_check_catches_the_old_readme(scaffold: Path) -> None:
    dockerfile = (scaffold / "relay" / "Dockerfile").read_text(encoding="utf-8")
    old = "| `relay/` | the outbox relay service (runs `edaenv relay`) |\n"
    assert relay_mismatch(old, dockerfile) == (
        "the README says '| `relay/` | the outbox relay service (runs `edaenv relay`) |'; "
        "the image runs `python -m edaenv.outbox`"
    )
