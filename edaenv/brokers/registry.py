"""Which adapter serves a broker, and what the rest of edaenv knows about each broker.

The only place besides the adapters and the compose fragments that tells brokers apart
(tests/unit/test_architecture.py checks it): a new broker is an adapter module, a fragment and
a PROFILES entry. The profiles are plain data, so reading them imports no client library.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edaenv.brokers.base import Endpoint
from edaenv.errors import UsageError

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker


@dataclass(frozen=True)
class Profile:
    adapter: str  # the module under edaenv.brokers
    # How a client on the host reaches it: its port (by name, see config.BROKER_PORTS), what
    # the endpoint is called, and the URL: `scheme://USER:PASSWORD@host:port<path>` with the
    # credentials of .env's `<credentials>_USER`/`_PASSWORD`, or a bare host:port without.
    client_port: str
    what: str
    in_stack_url: str  # how the stack's own containers reach it (compose variables allowed)
    scheme: str | None = None
    credentials: str | None = None
    path: str = ""
    # A second endpoint on the host: (port name, what it is, variable).
    extra: tuple[str, str, str] | None = None
    kafka_api: bool = False  # speaks the Kafka protocol: EDAENV_KAFKA_BOOTSTRAP_SERVERS too


_KAFKA = Profile(
    adapter="kafka",
    client_port="kafka",
    what="Kafka API (bootstrap)",
    in_stack_url="broker:19092",
    kafka_api=True,
)
PROFILES = {
    "kafka": _KAFKA,
    "redpanda": dataclasses.replace(
        _KAFKA, extra=("admin", "admin API", "EDAENV_REDPANDA_ADMIN_URL")
    ),
    "rabbitmq": Profile(
        adapter="rabbitmq",
        client_port="amqp",
        what="AMQP",
        in_stack_url="amqp://${RABBITMQ_USER}:${RABBITMQ_PASSWORD}@broker:5672/%2F",
        scheme="amqp",
        credentials="RABBITMQ",
        path="/%2F",
        extra=("management", "management UI", "EDAENV_RABBITMQ_MANAGEMENT_URL"),
    ),
    "nats": Profile(
        adapter="nats",
        client_port="client",
        what="NATS client",
        in_stack_url="nats://${NATS_USER}:${NATS_PASSWORD}@broker:4222",
        scheme="nats",
        credentials="NATS",
        extra=("monitor", "monitoring", "EDAENV_NATS_MONITOR_URL"),
    ),
}
ADAPTERS = {name: profile.adapter for name, profile in PROFILES.items()}


def profile(broker: str) -> Profile:
    found = PROFILES.get(broker)
    if found is None:
        raise UsageError(f"unknown broker '{broker}'", hint=f"use one of: {', '.join(PROFILES)}")
    return found


def dead_letter_source(broker: str, topic: str) -> str:
    """What `Broker.tail` reads a topic's dead letters from: each adapter names its own."""
    import importlib

    module = ADAPTERS.get(broker)
    if module is None:
        raise UsageError(f"unknown broker '{broker}'", hint=f"use one of: {', '.join(ADAPTERS)}")
    source: str = importlib.import_module(f"edaenv.brokers.{module}").dead_letter_source(topic)
    return source


def connect(endpoint: Endpoint) -> Broker:
    """A connected adapter; BrokerError naming the endpoint when it cannot be reached within
    endpoint.connect_timeout."""
    module = ADAPTERS.get(endpoint.broker)
    if module == "kafka":
        from edaenv.brokers.kafka import KafkaBroker

        return KafkaBroker(endpoint)
    if module == "rabbitmq":
        from edaenv.brokers.rabbitmq import RabbitBroker

        return RabbitBroker(endpoint)
    if module == "nats":
        from edaenv.brokers.nats import NatsBroker

        return NatsBroker(endpoint)
    raise UsageError(
        f"unknown broker '{endpoint.broker}'", hint=f"use one of: {', '.join(ADAPTERS)}"
    )
