"""The hosts the Kafka adapter probes before librdkafka connects (a refused connection is
reported at once, not after librdkafka's own retries): parsed from `bootstrap.servers`."""

from __future__ import annotations

import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.brokers.base import probe
from edaenv.brokers.kafka import _hosts
from edaenv.errors import BrokerError

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join)
port = st.integers(min_value=1, max_value=65535)


def test_exact_cases() -> None:
    assert _hosts("127.0.0.1:12092") == [("127.0.0.1", 12092)]
    assert _hosts("broker:9092, other:19092") == [("broker", 9092), ("other", 19092)]
    assert _hosts("PLAINTEXT://broker:29092") == [("broker", 29092)]
    assert _hosts("broker") == [("broker", 9092)]
    assert _hosts("[::1]:9092") == [("::1", 9092)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(hostname, port, st.booleans(), st.booleans()), min_size=1, max_size=4))
@example([("localhost", 9092, False, True)])
def test_every_server_of_a_bootstrap_list_is_probed(
    servers: list[tuple[str, int, bool, bool]],
) -> None:
    text = ",".join(
        f"{'PLAINTEXT://' if scheme else ''}{host}{f':{number}' if with_port else ''}"
        for host, number, scheme, with_port in servers
    )
    assert _hosts(text) == [
        (host, number if with_port else 9092) for host, number, _, with_port in servers
    ]


def test_probe_fails_at_once_on_a_refused_port_and_passes_a_listening_one() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    with pytest.raises(BrokerError, match=f"^cannot reach kafka at here:{refused}$"):
        probe("kafka", f"here:{refused}", [("127.0.0.1", refused)], 5.0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        listening = server.getsockname()[1]
        left = probe("kafka", "x", [("127.0.0.1", refused), ("127.0.0.1", listening)], 5.0)
    assert 4.0 < left <= 5.0
