"""Event inputs cannot break edaenv's promises (issue 9, items 7 and 9; issue 10, item 8).

Contracts and event data, generated: every input is accepted, or refused with a located error
(exit 2 through the CLI), never the "unexpected ... report it" path; a rejected value is never
echoed in megabytes; an accepted topic is safe as a file name; nothing a contract says makes
`bundle` write outside its directory. Then one exact-output test per reproduction.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edaenv import names
from edaenv.application import publishing
from edaenv.brokers.base import Delivery
from edaenv.config import Config, load_config
from edaenv.errors import ContractError, UsageError
from edaenv.events import jsondata
from edaenv.events.contracts import Contract, load_contract
from edaenv.events.envelope import new_id, new_traceparent
from edaenv.events.generate import generator
from edaenv.events.validate import Validator, parse_json, read_jsonl
from edaenv.service import event_id
from tests.conftest import run_edaenv

ORDER_ID = "6f1c0d0e-9a0b-4c1d-8e2f-3a4b5c6d7e8f"
CONTRACT = Path("eda/events/OrderPlaced.v1.schema.json")
# Nothing answers there: a command that gets as far as the broker fails at once (exit 3).
NO_BROKER = {"EDAENV_BROKER_URL": "127.0.0.1:1"}
NO_DATABASE = {"EDAENV_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/nothing"}
MESSAGE_MAX = 400  # what one error line may take, whatever the input


# --- a project to work in ------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edaenv init --defaults` once for the module; tests work on copies."""
    root = tmp_path_factory.mktemp("template") / "shop"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    result = run_edaenv("init", "--defaults", cwd=root)
    assert result.code == 0, result.err
    return root.resolve()


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "shop"
    shutil.copytree(template, copy, symlinks=True)
    return copy.resolve()


@pytest.fixture(scope="module")
def shop(template: Path) -> tuple[Config, Contract, Validator]:
    config = load_config(template / "edaenv.yaml")
    contract = load_contract(template / CONTRACT)
    return config, contract, Validator(contract)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contracts")


def schema_of(template: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((template / CONTRACT).read_text())
    return schema


def set_contract(repo: Path, change: Any) -> Path:
    path = repo / CONTRACT
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))
    return path


def order(**changes: Any) -> dict[str, Any]:
    return {"orderId": ORDER_ID, "customerId": "c-1", "total": 12.5, **changes}


# --- generated inputs: contract metadata -------------------------------------------------

JSON_LEAF = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
)  # st.floats() includes NaN and +-Infinity
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
NAME_LIKE = (
    st.text(max_size=40)
    | st.from_regex(names.TOPIC, fullmatch=True).filter(lambda t: len(t) < 250)
    | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
    | st.sampled_from(
        ["../../x", "..", ".", "a/b", "a\\b", "/etc", "a..b", "", " ", "x" * 300, "\x00", "a\nb"]
    )
)
FIELDS = ("topic", "owner", "event", "key", "version", "aggregate")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=NAME_LIKE | JSON_VALUE)
@example(field="topic", value="../../x")
@example(field="topic", value="..")
@example(field="version", value=True)
@example(field="version", value=float("nan"))
@example(field="owner", value="team\nEVIL")
@example(field="event", value="Order.Placed")
@example(field="key", value="")
def test_contract_metadata_is_accepted_and_safe_or_refused_at_its_pointer(
    template: Path, scratch: Path, field: str, value: Any
) -> None:
    schema = schema_of(template)
    schema["x-edaenv"][field] = value
    if field == "key" and isinstance(value, str):
        schema["properties"][value] = {}  # so that the key's grammar alone decides
    path = scratch / "OrderPlaced.v1.schema.json"
    path.write_text(json.dumps(schema))  # NaN and Infinity written as Python writes them
    try:
        contract = load_contract(path)
    except UsageError as exc:  # ContractError is one
        assert str(exc.where).startswith(f"{path}#/x-edaenv/{field}"), exc
        assert len(str(exc)) + len(exc.hint or "") < MESSAGE_MAX + len(str(path))
        return
    assert getattr(contract, field) == value
    topic = contract.topic
    assert "/" not in topic and "\\" not in topic and topic not in (".", "..")
    assert topic.isprintable() and Path(topic).name == topic
    assert contract.event.isidentifier() and contract.aggregate.isidentifier()
    assert type(contract.version) is int and contract.version >= 1


@settings(max_examples=200, deadline=None)
@given(
    content=st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | JSON_VALUE.map(lambda v: json.dumps(v).encode())
)
@example(content=b'{"x-edaenv": {"topic": "orders"}}\xff')
@example(content=b"[" * 5000 + b"]" * 5000)
@example(content=b'{"$schema": 5, "x-edaenv": {}}')
def test_any_contract_file_loads_or_is_refused_naming_the_file(
    scratch: Path, content: bytes
) -> None:
    path = scratch / "Any.v1.schema.json"
    path.write_bytes(content)
    try:
        load_contract(path)
    except UsageError as exc:
        assert str(exc.where).startswith(str(path)), exc
        assert len(str(exc)) < MESSAGE_MAX + len(str(path))


@settings(max_examples=60, deadline=None)
@given(
    schema=st.recursive(
        st.just({"type": "string"}) | st.just({"$ref": "#"}) | st.just({"$ref": "#/$defs/x"}),
        lambda inner: (
            st.builds(lambda s: {"type": "object", "properties": {"a": s}}, inner)
            | st.builds(lambda s: {"type": "array", "items": s}, inner)
            | st.builds(lambda s: {"$defs": {"x": s}, "allOf": [{"$ref": "#/$defs/x"}]}, inner)
        ),
        max_leaves=40,
    )
)
def test_any_schema_shape_validates_and_generates_or_is_refused(
    template: Path, scratch: Path, schema: dict[str, Any]
) -> None:
    """Nesting, recursive and dangling references: a located refusal or working data."""
    document = {**schema, "x-edaenv": schema_of(template)["x-edaenv"]}
    document["x-edaenv"]["key"] = "a"
    path = scratch / "Shape.v1.schema.json"
    path.write_text(json.dumps(document))
    try:
        contract = load_contract(path)
        make = generator(contract)
        validator = Validator(contract)
    except UsageError as exc:
        assert str(exc.where).startswith(str(path)), exc
        return
    import random

    data = make(random.Random(1))
    assert validator.is_valid(data), data


# --- generated inputs: event data ----------------------------------------------------------


def deep_text(levels: int, opener: str = "[") -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * levels + "1" + closer * levels


EVENT_TEXT = (
    JSON_VALUE.map(json.dumps)
    | st.builds(
        lambda total, name: json.dumps(order(total=total, customerId=name)),
        JSON_LEAF,
        st.text(max_size=80),
    )
    | st.builds(deep_text, st.integers(1, 5000), st.sampled_from(["[", '{"a":']))
    | st.text(max_size=60)
)


@settings(max_examples=300, deadline=None)
@given(text=EVENT_TEXT)
@example(text=json.dumps(order(total=float("nan"))))
@example(text=json.dumps(order(total=float("inf"))))
@example(text='{"total": 1e400}')
@example(text=deep_text(10_000))
@example(text='{"orderId": "\\ud800"}')
@example(text='{"n": ' + "9" * 5000 + "}")
@example(text=json.dumps(order(customerId="c" * 10_000_000)))
def test_event_data_is_sent_as_strict_json_or_refused_short_at_its_pointer(
    shop: tuple[Config, Contract, Validator], text: str
) -> None:
    config, contract, validator = shop
    try:
        data = parse_json(text, "--data")
        batch = publishing.prepare(config, contract, [("--data", data)], validator=validator)
    except UsageError as exc:
        assert str(exc.where).startswith("--data"), exc
        assert len(str(exc)) + len(exc.hint or "") < MESSAGE_MAX, str(exc)[:500]
        return
    [message] = batch.messages
    strict = json.loads(message.value, parse_constant=lambda name: pytest.fail(name))
    assert strict == data
    assert message.value.count(b"[") + message.value.count(b"{") <= 64 or depth(strict) <= 64


@settings(max_examples=150, deadline=None)
@given(data=JSON_VALUE | st.builds(lambda total: order(total=total), st.floats()))
@example(data=order(total=float("-inf")))
@example(data={"orderId": ORDER_ID, "deep": json.loads(deep_text(100))})
def test_event_data_given_in_process_is_checked_the_same_way(
    shop: tuple[Config, Contract, Validator], data: Any
) -> None:
    config, contract, validator = shop
    try:
        batch = publishing.prepare(
            config, contract, [("generated event 1", data)], validator=validator
        )
    except UsageError as exc:
        assert str(exc.where).startswith("generated event 1"), exc
        return
    [message] = batch.messages
    assert json.loads(message.value, parse_constant=lambda name: pytest.fail(name)) == data


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.binary(max_size=40) | EVENT_TEXT.map(str.encode), max_size=4))
@example(lines=[b'{"a": 1}', b'{"b": "\xff"}'])
def test_a_json_lines_file_reads_or_is_refused_at_its_line(
    scratch: Path, lines: list[bytes]
) -> None:
    path = scratch / "events.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    try:
        list(read_jsonl(path))
    except UsageError as exc:
        assert str(exc.where).startswith(f"{path}:") or ":" in str(exc.where), exc


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


# --- generated inputs through the real CLI ---------------------------------------------------


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(FIELDS), value=NAME_LIKE | JSON_VALUE)
@example(field="topic", value="../../x")
def test_the_cli_refuses_any_bad_metadata_with_exit_2(
    template: Path, repo: Path, field: str, value: Any
) -> None:
    schema = schema_of(template)  # the examples share one copy of the project
    schema["x-edaenv"][field] = value
    path = repo / CONTRACT
    path.write_text(json.dumps(schema))
    result = run_edaenv("publish", "OrderPlaced", "--data", "{}", cwd=repo, env=NO_BROKER)
    # '{}' lacks the required fields: a good contract refuses the data, a bad one itself.
    assert result.code == 2, result.err
    # A valid event name renames the event, so OrderPlaced is then unknown: also exit 2.
    renamed = field == "event" and result.err.startswith("error: TYPE: unknown event type")
    assert (
        result.err.startswith(f"error: {path}#/x-edaenv/{field}")
        or result.err.startswith("error: --data#")
        or renamed
    ), result.err
    assert "unexpected" not in result.err and "Traceback" not in result.err


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=EVENT_TEXT.filter(lambda text: "\x00" not in text))  # argv cannot carry a NUL
@example(text=deep_text(10_000))
def test_the_cli_sends_or_refuses_any_event_data(repo: Path, text: str) -> None:
    result = run_edaenv("publish", "OrderPlaced", "--data", text, cwd=repo, env=NO_BROKER)
    assert result.code in (2, 3), result.err  # 3: valid, and the broker does not answer
    assert "unexpected" not in result.err and "Traceback" not in result.err
    assert len(result.err) < 2 * MESSAGE_MAX


# --- exact output, one per reproduction -------------------------------------------------------


def test_a_contract_that_is_not_utf8_is_located(repo: Path) -> None:
    path = repo / CONTRACT
    path.write_bytes(path.read_bytes().replace(b"customer", b"cust\xffmer", 1))
    result = run_edaenv("publish", "OrderPlaced", "--data", "{}", cwd=repo)
    offset = path.read_bytes().index(b"\xff")
    assert (result.code, result.err) == (
        2,
        f"error: {path}: not UTF-8 text: byte 0xff at offset {offset}\n"
        "  hint: save the contract as UTF-8\n",
    )


def test_an_unresolvable_ref_is_located_when_the_contract_loads(repo: Path) -> None:
    path = set_contract(
        repo, lambda s: s["properties"].__setitem__("total", {"$ref": "#/$defs/Money"})
    )
    result = run_edaenv("publish", "OrderPlaced", "--data", "{}", cwd=repo)
    assert (result.code, result.err) == (
        2,
        f"error: {path}#/properties/total/$ref: $ref '#/$defs/Money' cannot be resolved: it "
        "points to nothing in this contract\n"
        '  hint: point it at a definition in this file, e.g. "$ref": "#/$defs/Address"\n',
    )


def test_a_ref_outside_the_contract_is_refused_not_fetched(repo: Path) -> None:
    path = set_contract(
        repo,
        lambda s: s["properties"].__setitem__("total", {"$ref": "https://example.com/m.json"}),
    )
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    assert caught.value.where == f"{path}#/properties/total/$ref"
    assert caught.value.message == (
        "$ref 'https://example.com/m.json' cannot be resolved: edaenv resolves references "
        "inside the contract only, and fetches nothing"
    )


def test_a_contract_nested_10000_deep_is_located(repo: Path) -> None:
    path = repo / CONTRACT
    schema = json.loads(path.read_text())
    text = json.dumps(schema).replace('"total": {', '"total": ' + '{"not": ' * 10_000 + "{", 1)
    path.write_text(text.replace("}}}", "}}}" + "}" * 10_000, 1))
    result = run_edaenv("publish", "OrderPlaced", "--data", "{}", cwd=repo)
    pointer = "/properties/total" + "/not" * 62
    assert (result.code, result.err) == (
        2,
        f"error: {path}#{jsondata.pointer(pointer.split('/')[1:])}: nested deeper than 64 "
        "levels\n"
        "  hint: flatten the data: at most 64 levels of objects and arrays\n",
    )


@pytest.mark.parametrize(
    ("field", "value", "message", "hint"),
    [
        (
            "topic",
            "../../x",
            "'../../x' cannot be a topic",
            "use letters, digits, '_' and '-', in parts joined by single dots (at most 200 "
            "characters), e.g. 'orders' or 'shop.orders'",
        ),
        (
            "owner",
            "team\nx",
            "'team\\nx' cannot be an owner",
            "name the team with letters, digits, spaces and . _ @ / - (at most 100, starting "
            "with a letter or digit), e.g. 'orders-team'",
        ),
        (
            "event",
            "Order Placed",
            "'Order Placed' cannot be an event name",
            "a plain identifier: letters, digits and '_', not starting with a digit (at most "
            "100), e.g. 'OrderPlaced'",
        ),
        (
            "key",
            "orderID",
            "the key 'orderID' is not one of the schema's properties",
            "name the property holding the aggregate id: 'orderId', 'customerId', 'total'",
        ),
        ("version", True, "the version must be a positive integer, not true", 'e.g. "version": 1'),
    ],
)
def test_contract_metadata_is_checked_against_its_grammar(
    repo: Path, field: str, value: Any, message: str, hint: str
) -> None:
    path = set_contract(repo, lambda s: s["x-edaenv"].__setitem__(field, value))
    result = run_edaenv("publish", "OrderPlaced", "--data", "{}", cwd=repo)
    assert (result.code, result.err) == (
        2,
        f"error: {path}#/x-edaenv/{field}: {message}\n  hint: {hint}\n",
    )


def test_a_data_file_that_is_not_utf8_is_located(repo: Path) -> None:
    (repo / "order.json").write_bytes(b'{"customerId": "caf\xe9"}')
    result = run_edaenv("publish", "OrderPlaced", "--file", "order.json", cwd=repo)
    assert (result.code, result.err) == (
        2,
        "error: order.json: not UTF-8 text: byte 0xe9 at offset 19\n"
        "  hint: save the file as UTF-8\n",
    )


def test_data_on_stdin_that_is_not_utf8_is_located(repo: Path) -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edaenv", "publish", "OrderPlaced", "-"],
        cwd=repo,
        input=b'{"customerId": "caf\xe9"}',
        capture_output=True,
        env={**os.environ, "NO_COLOR": "1", "TERM": "dumb"},
    )
    assert (result.returncode, result.stderr.decode()) == (
        2,
        "error: stdin: not UTF-8 text: byte 0xe9 at offset 19\n  hint: send the data as UTF-8\n",
    )


def test_a_json_lines_file_that_is_not_utf8_names_the_line(repo: Path) -> None:
    path = repo / "orders.jsonl"
    path.write_bytes(json.dumps(order()).encode() + b'\n{"customerId": "caf\xe9"}\n')
    with pytest.raises(UsageError) as caught:
        list(read_jsonl(path))
    assert (caught.value.where, caught.value.message) == (
        f"{path}:2",
        "not UTF-8 text: byte 0xe9 at column 20",
    )


def test_data_nested_10000_deep_is_refused_at_its_pointer(repo: Path) -> None:
    result = run_edaenv("publish", "OrderPlaced", "--data", deep_text(10_000), cwd=repo)
    assert (result.code, result.err) == (
        2,
        f"error: --data#{'/0' * 64}: nested deeper than 64 levels\n"
        "  hint: flatten the data: at most 64 levels of objects and arrays\n",
    )


@pytest.mark.parametrize(
    ("total", "name"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-1e400", "-Infinity")]
)
def test_a_number_json_does_not_have_is_refused(repo: Path, total: str, name: str) -> None:
    data = f'{{"orderId": "{ORDER_ID}", "customerId": "c", "total": {total}}}'
    result = run_edaenv("publish", "OrderPlaced", "--data", data, cwd=repo, env=NO_BROKER)
    assert (result.code, result.err) == (
        2,
        f"error: --data#/total: {name} is not a JSON number\n"
        "  hint: JSON numbers are finite: write a number (an exponent such as 1e400 reads as "
        "Infinity), or null\n",
    )


def test_a_generated_infinity_is_refused_before_anything_is_sent(
    shop: tuple[Config, Contract, Validator],
) -> None:
    config, contract, validator = shop
    with pytest.raises(UsageError) as caught:
        publishing.prepare(
            config,
            contract,
            [("generated event 1", order(total=float("inf")))],
            validator=validator,
        )
    assert (caught.value.where, caught.value.message) == (
        "generated event 1#/total",
        "Infinity is not a JSON number",
    )


def test_a_rejected_10_mb_value_is_not_echoed(repo: Path) -> None:
    (repo / "order.json").write_text(json.dumps(order(customerId="c" * 10_000_000)))
    result = run_edaenv("publish", "OrderPlaced", "--file", "order.json", cwd=repo)
    assert (result.code, result.err) == (
        2,
        "error: order.json#/customerId: 'cccccccccccccccccccccccccccccccccccccccccccccccccccccc"
        "...' is too long (rule 'maxLength' of OrderPlaced.v1)\n"
        "  hint: make the data match eda/events/OrderPlaced.v1.schema.json#/properties/"
        "customerId/maxLength\n",
    )


def test_a_forked_child_mints_its_own_ids_and_a_seed_stays_reproducible(
    shop: tuple[Config, Contract, Validator],
) -> None:
    """The sample consumer dropped real events as duplicates: a forked child minted its
    parent's next ids."""
    _, contract, _ = shop
    new_id()  # the parent's generator has state before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        try:
            data = [d for _, d in publishing.generated(contract, 3, 7)]
            os.write(write, json.dumps([new_id(), new_traceparent(), data]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id, child_trace, child_data = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert child_id != new_id()
    assert child_trace != new_traceparent()
    assert child_data == [d for _, d in publishing.generated(contract, 3, 7)]


def test_seed_checks_the_broker_before_generating_events(repo: Path) -> None:
    """Ten million events take minutes to generate: an unreachable broker must fail first."""
    started = time.monotonic()
    result = run_edaenv(
        "seed", "OrderPlaced", "--count", "10000000", cwd=repo, env=NO_BROKER, timeout=60
    )
    assert (result.code, result.err) == (
        3,
        "error: cannot reach kafka at 127.0.0.1:1\n"
        "  hint: is the stack up? run `edaenv up`, or `edaenv status`\n",
    )
    assert time.monotonic() - started < 15


def test_seed_via_outbox_checks_the_database_before_generating_events(repo: Path) -> None:
    started = time.monotonic()
    result = run_edaenv(
        "seed",
        "OrderPlaced",
        "--count",
        "10000000",
        "--via-outbox",
        cwd=repo,
        env=NO_DATABASE,
        timeout=60,
    )
    assert result.code == 3, result.err
    assert result.err.startswith("error: cannot reach postgres at 127.0.0.1:1/nothing: ")
    assert time.monotonic() - started < 15


def test_bundle_into_a_file_is_refused_and_writes_nothing(repo: Path) -> None:
    (repo / "notes.txt").write_text("mine\n")
    before = sorted(p.name for p in repo.iterdir())
    result = run_edaenv("bundle", "notes.txt", cwd=repo)
    assert (result.code, result.err) == (
        2,
        "error: DIR: 'notes.txt' is a file, not a directory\n"
        "  hint: name a new or existing directory for the bundle, e.g. `edaenv bundle "
        "edaenv-bundle`\n",
    )
    below = run_edaenv("bundle", "notes.txt/bundle", cwd=repo)
    assert (below.code, below.err) == (
        2,
        "error: DIR: cannot create the directory 'notes.txt/bundle': Not a directory\n"
        "  hint: name a directory you can write to, e.g. `edaenv bundle edaenv-bundle`\n",
    )
    assert (repo / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in repo.iterdir()) == before


def test_bundle_never_writes_through_a_link_out_of_its_directory(repo: Path) -> None:
    outside = repo.parent / "elsewhere.json"
    outside.write_text("untouched\n")
    bundle = repo / "bundle"
    bundle.mkdir()
    (bundle / "faults.json").symlink_to(outside)
    result = run_edaenv("bundle", "bundle", cwd=repo, env={**NO_BROKER, **NO_DATABASE})
    assert result.code == 0, result.err
    assert outside.read_text() == "untouched\n"
    summary = (bundle / "summary.md").read_text()
    assert "- faults: not written: 'faults.json' would be outside bundle\n" in summary


@pytest.mark.parametrize(
    ("position", "again"),
    [
        (
            {"queue": "orders.consumer", "delivery_tag": 1},
            {"queue": "orders.consumer", "delivery_tag": 9},
        ),
        ({"stream": "ORDERS", "seq": 5}, {"stream": "ORDERS", "seq": 5}),
    ],
)
def test_a_message_without_id_is_known_by_its_content_not_its_position(
    position: dict[str, Any], again: dict[str, Any]
) -> None:
    """A RabbitMQ redelivery has a new delivery tag: the guard took it for a new event."""

    def delivery(value: bytes, at: dict[str, Any], key: str = "o-1") -> Delivery:
        return Delivery("orders", key, value, {}, {}, at)

    first = event_id(delivery(b'{"orderId": "o-1"}', position))
    assert event_id(delivery(b'{"orderId": "o-1"}', again)) == first
    assert event_id(delivery(b'{"orderId": "o-2"}', position)) != first
    assert event_id(delivery(b'{"orderId": "o-1"}', position, key="o-2")) != first
    with_id = Delivery("orders", "o-1", b"{}", {"id": "e-1"}, {}, position)
    assert event_id(with_id) == "e-1"


def test_a_recursive_schema_cannot_be_generated_and_says_where(repo: Path) -> None:
    def recursive(schema: dict[str, Any]) -> None:
        schema["$defs"] = {
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
        }
        schema["properties"]["node"] = {"$ref": "#/$defs/Node"}

    path = set_contract(repo, recursive)
    with pytest.raises(ContractError) as caught:
        generator(load_contract(path))
    assert caught.value.where == f"{path}#/properties/node/properties/next"
    assert caught.value.message == "cannot generate data for the recursive $ref '#/$defs/Node'"
