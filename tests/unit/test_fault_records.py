"""faults.json: the typed Fault records read what an earlier edaenv wrote and write it back
unchanged, and a damaged record is an error that says where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edaenv.errors import UsageError
from edaenv.faults.state import Fault, FaultStore, HeldEvent

# Written by the edaenv before Fault was a dataclass (dict records), byte for byte.
OLD_FORMAT = """{
  "active": [
    {
      "addresses": {
        "shop_default": "172.20.0.3"
      },
      "container": "9f1c0e7d",
      "container_name": "shop-broker-1",
      "healer_pid": 4242,
      "id": "a1b2c3",
      "kind": "kill",
      "signal": "SIGKILL",
      "started": "2026-12-05T10:00:00.000+00:00",
      "target": "broker",
      "until": "2026-12-05T10:00:10.000+00:00"
    },
    {
      "addresses": {
        "shop_default": "172.20.0.4"
      },
      "container": "7e6d5c4b",
      "container_name": "shop-relay-1",
      "id": "d4e5f6",
      "kind": "partition",
      "networks": {
        "shop_default": [
          "relay",
          "shop-relay-1"
        ]
      },
      "started": "2026-12-05T10:00:01.000+00:00",
      "target": "relay"
    },
    {
      "event_ids": [
        "e-1"
      ],
      "held": [
        {
          "attributes": {
            "id": "e-1",
            "type": "OrderPlaced.v1"
          },
          "key": "k-1",
          "topic": "orders",
          "value": "{\\"orderId\\": \\"k-1\\"}"
        }
      ],
      "id": "0a0b0c",
      "kind": "delay",
      "started": "2026-12-05T10:00:02.000+00:00",
      "summary": "1 events held",
      "target": "orders"
    }
  ],
  "history": [
    {
      "delivered": 0,
      "dropped_as_duplicate": [
        "e-9"
      ],
      "ended": "2026-12-05T09:00:00.000+00:00",
      "event_ids": [
        "e-9"
      ],
      "healed_later_by_a_newer_edaenv": {
        "kept": true
      },
      "id": "fedcba",
      "kind": "duplicate",
      "started": "2026-12-05T09:00:00.000+00:00",
      "summary": "event e-9 delivered 0 more time(s); 1 dropped by nats as duplicates",
      "target": "orders",
      "times": 1
    },
    {
      "addresses": {},
      "container": "1234abcd",
      "container_name": "shop-consumer-1",
      "healed": "2026-12-05T09:30:00.000+00:00",
      "healed_by": "heal",
      "id": "112233",
      "kind": "pause",
      "started": "2026-12-05T09:20:00.000+00:00",
      "target": "consumer"
    }
  ]
}
"""


def store_with(tmp_path: Path, text: str) -> FaultStore:
    (tmp_path / "faults.json").write_text(text, encoding="utf-8")
    return FaultStore(tmp_path)


def test_an_old_format_file_loads_as_typed_records(tmp_path: Path) -> None:
    store = store_with(tmp_path, OLD_FORMAT)
    kill, partition, delay = store.active()
    assert (kill.kind, kill.target, kill.signal, kill.healer_pid) == (
        "kill",
        "broker",
        "SIGKILL",
        4242,
    )
    assert kill.addresses == {"shop_default": "172.20.0.3"}
    assert partition.networks == {"shop_default": ("relay", "shop-relay-1")}
    assert delay.container is None
    assert delay.held == (
        HeldEvent("orders", "k-1", '{"orderId": "k-1"}', {"id": "e-1", "type": "OrderPlaced.v1"}),
    )
    duplicate, pause = store.history()
    assert duplicate.event_ids == ("e-9",) and duplicate.dropped_as_duplicate == ("e-9",)
    assert (pause.healed_by, pause.addresses) == ("heal", {})


def test_rewriting_an_old_format_file_changes_only_what_was_changed(tmp_path: Path) -> None:
    store = store_with(tmp_path, OLD_FORMAT)
    changed = store.update("d4e5f6", until="2026-12-05T10:05:00.000+00:00", healer_pid=99)
    assert changed is not None and changed.until == "2026-12-05T10:05:00.000+00:00"
    expected = json.loads(OLD_FORMAT)
    expected["active"][1] |= {"until": "2026-12-05T10:05:00.000+00:00", "healer_pid": 99}
    # A key this edaenv does not know (a newer one wrote it) is written back as it was read.
    assert json.loads(store.path.read_text(encoding="utf-8")) == expected
    assert store.update("no-such-id", until="x") is None


def test_resolve_moves_a_fault_to_the_history_with_when_and_how(tmp_path: Path) -> None:
    store = store_with(tmp_path, OLD_FORMAT)
    resolved = store.resolve("a1b2c3", "heal")
    assert resolved is not None and resolved.healed is None  # as it was while active
    assert [f.id for f in store.active()] == ["d4e5f6", "0a0b0c"]
    moved = store.history()[-1]
    assert (moved.id, moved.healed_by) == ("a1b2c3", "heal") and moved.healed
    assert store.resolve("a1b2c3", "heal") is None  # already healed


@pytest.mark.parametrize(
    ("record", "pointer"),
    [
        ({"kind": "kill", "target": "broker", "started": "t"}, "#/active/1"),  # no id
        ({"id": "x", "kind": "delay", "target": "t", "started": "t", "held": [1]}, "#/active/1"),
        ("not a record", "#/active/1"),
    ],
)
def test_a_damaged_record_is_an_error_that_says_where(
    tmp_path: Path, record: Any, pointer: str
) -> None:
    data = json.loads(OLD_FORMAT)
    data["active"].insert(1, record)
    store = store_with(tmp_path, json.dumps(data))
    with pytest.raises(UsageError) as caught:
        store.active()
    assert caught.value.where == f"{store.path}{pointer}"
    assert "heal by hand" in (caught.value.hint or "")


texts = st.text(alphabet="abcdef0123456789-_.", min_size=1, max_size=8)
faults = st.builds(
    Fault,
    id=texts,
    kind=st.sampled_from(["kill", "partition", "delay", "burst"]),
    target=texts,
    started=texts,
    container=st.none() | texts,
    addresses=st.none() | st.dictionaries(texts, texts, max_size=2),
    networks=st.none() | st.dictionaries(texts, st.tuples(texts) | st.tuples(), max_size=2),
    event_ids=st.none() | st.lists(texts, max_size=3).map(tuple),
    held=st.none()
    | st.lists(
        st.builds(HeldEvent, texts, texts, texts, st.dictionaries(texts, texts, max_size=2)),
        max_size=2,
    ).map(tuple),
    seconds=st.none() | st.floats(0, 1e6),
    healer_pid=st.none() | st.integers(1, 2**22),
    extra=st.dictionaries(texts.map(lambda t: f"x-{t}"), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(faults, max_size=4))
def test_records_survive_the_file(
    tmp_path_factory: pytest.TempPathFactory, records: list[Fault]
) -> None:
    store = FaultStore(tmp_path_factory.mktemp("faults"))
    for fault in records:
        store.add(fault)
    assert store.active() == records
    assert [f.to_json() for f in store.active()] == [f.to_json() for f in records]
