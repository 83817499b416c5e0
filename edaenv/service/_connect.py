"""Settings from the stack's environment, and the broker and database connections they name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edaenv.errors import UsageError
from edaenv.events.topology import consumer_group
from edaenv.names import shown

if TYPE_CHECKING:
    import psycopg

    from edaenv.brokers.base import Broker


@dataclass(frozen=True)
class Settings:
    """Where a service in the stack connects, from the variables the stack gives its containers
    (see `from_env`)."""

    broker: str  # kafka | redpanda | rabbitmq | nats
    broker_url: str
    database_url: str
    project: str = "edaenv"  # the stack's project name (EDAENV_PROJECT)
    service_name: str = "consumer"  # the name spans are exported under (OTEL_SERVICE_NAME)
    metrics_port: int | None = None  # where /metrics and /healthz listen; None: nowhere
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in the stack's containers, for Prometheus

    @property
    def consumer_group(self) -> str:
        """The consumer group (RabbitMQ: queue, NATS: durable consumer) of the stack's
        consumer: the one `edaenv status` and the dashboards report on."""
        return consumer_group(self.project)

    @classmethod
    def from_env(cls) -> Settings:
        """EDAENV_BROKER, EDAENV_BROKER_URL, EDAENV_DATABASE_URL (required; the stack sets them
        in its containers, `edaenv env` prints them for the host), EDAENV_PROJECT (or
        EDAENV_COMPOSE_PROJECT, as `edaenv env` names it), OTEL_SERVICE_NAME,
        EDAENV_METRICS_PORT and EDAENV_METRICS_HOST. Raises UsageError (an EdaenvError, with a
        hint) when a required one is missing or the metrics port is not a port number."""
        from edaenv.outbox.runtime import from_env

        port = os.environ.get("EDAENV_METRICS_PORT", "")
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise UsageError(
                f"{shown(port)} is not a port number",
                where="EDAENV_METRICS_PORT",
                hint="set it to a port from 1 to 65535, or leave it unset for no metrics",
            )
        base = from_env()
        project = os.environ.get("EDAENV_PROJECT") or os.environ.get("EDAENV_COMPOSE_PROJECT")
        return cls(
            broker=base.broker,
            broker_url=base.broker_url,
            database_url=base.database_url,
            project=project or "edaenv",
            service_name=os.environ.get("OTEL_SERVICE_NAME") or "consumer",
            metrics_port=base.metrics_port,
            metrics_host=base.metrics_host,
        )


def connect_broker(settings: Settings) -> Broker:
    """The stack's broker, connected (its client library's INFO logs quieted). Raises
    BrokerError when it cannot be reached within 5 seconds."""
    from edaenv.outbox import runtime

    return runtime.connect_broker(
        runtime.Settings(
            broker=settings.broker,
            broker_url=settings.broker_url,
            database_url=settings.database_url,
        )
    )


def connect_database(
    settings: Settings | str, *, autocommit: bool = True, **options: Any
) -> psycopg.Connection[Any]:
    """A psycopg connection to the stack's Postgres (a Settings or a URL), with the options the
    relay uses: text as UTF-8 whatever the database's encoding, a vanished peer noticed within
    seconds (TCP keepalives, a user timeout) rather than after minutes. Autocommit by default:
    open a transaction with `with conn.transaction():`. `options` go to psycopg.connect."""
    import psycopg

    from edaenv.outbox.runtime import DATABASE_OPTIONS

    url = settings if isinstance(settings, str) else settings.database_url
    connection: psycopg.Connection[Any] = psycopg.connect(
        url, autocommit=autocommit, **{**DATABASE_OPTIONS, **options}
    )
    return connection
