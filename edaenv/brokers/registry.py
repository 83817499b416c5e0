"""Which adapter serves a broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edaenv.brokers.base import Endpoint
from edaenv.errors import UsageError

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker

ADAPTERS = {"kafka": "kafka", "redpanda": "kafka", "rabbitmq": "rabbitmq", "nats": "nats"}


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
