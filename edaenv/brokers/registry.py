"""Which adapter serves a broker, and where the host's clients find it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edaenv.brokers.base import Endpoint
from edaenv.errors import UsageError

if TYPE_CHECKING:
    import psycopg

    from edaenv.brokers.base import Broker
    from edaenv.config import Config

ADAPTERS = {"kafka": "kafka", "redpanda": "kafka", "rabbitmq": "rabbitmq", "nats": "nats"}


def host_endpoint(config: Config) -> Endpoint:
    """The stack's broker on 127.0.0.1 (ports from edaenv.yaml, credentials from .env);
    EDAENV_BROKER_URL wins, as it does in the relay and consumer containers."""
    url = os.environ.get("EDAENV_BROKER_URL")
    if not url:
        from edaenv.engine.endpoints import environment

        url = environment(config)["EDAENV_BROKER_URL"]
    return Endpoint(broker=config.broker, url=url)


def database_url(config: Config) -> str:
    """The stack's Postgres on 127.0.0.1; EDAENV_DATABASE_URL wins."""
    url = os.environ.get("EDAENV_DATABASE_URL")
    if url:
        return url
    if not config.has("postgres"):
        raise UsageError(
            "postgres is off in edaenv.yaml, so there is no outbox",
            hint="set `components: {postgres: true, outbox: true}`, or publish "
            "without --via-outbox",
        )
    from edaenv.engine.endpoints import environment

    return environment(config)["EDAENV_DATABASE_URL"]


def connect_database(url: str, *, timeout: int = 5) -> psycopg.Connection[Any]:
    """A host-side connection to the stack's Postgres. Text always comes as UTF-8: against a
    database created with encoding SQL_ASCII, psycopg would otherwise give text as bytes."""
    import psycopg

    return psycopg.connect(url, connect_timeout=timeout, client_encoding="UTF8")


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
