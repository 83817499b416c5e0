"""Where the relay and the consumer connect: from the environment in a container, or from
edaenv.yaml + .env on the host."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edaenv.errors import UsageError

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker
    from edaenv.config import Config


# libpq options for the relay's and the consumer's Postgres connections: a peer that vanished
# (a partitioned or re-addressed container) is noticed in seconds, not after the kernel's
# 15 minutes of retransmissions, and the connection is then opened again. Text always comes as
# UTF-8: a database created with encoding SQL_ASCII (a cluster initialised without a UTF-8
# locale) would otherwise give psycopg its text columns as bytes.
DATABASE_OPTIONS: dict[str, Any] = {
    "client_encoding": "UTF8",
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}


def prefer_io_threads() -> None:
    """The relay and the consumer overlap database I/O on one thread with broker I/O on another.
    Under CPython's default 5 ms switch interval, a thread whose I/O has completed can wait that
    long for the GIL while the other one computes; 0.5 ms makes the hand-over prompt (measured:
    relay drain +15-20%, consumer +30%, on the benchmarks in bench/)."""
    sys.setswitchinterval(0.0005)


# Client libraries whose INFO lines (pika: one per connection step and channel) drown the
# relay's and the consumer's own logs; their warnings and errors still show.
CLIENT_LOGGERS = ("pika", "nats")


def quiet_client_logs() -> None:
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Settings:
    broker: str
    broker_url: str
    database_url: str
    metrics_port: int | None = None
    # Where /metrics listens: 127.0.0.1 on the host; the stack's containers set 0.0.0.0
    # (EDAENV_METRICS_HOST) so that Prometheus reaches them over the compose network.
    metrics_host: str = "127.0.0.1"


def from_env() -> Settings:
    """The variables the stack gives the relay and consumer containers."""
    missing = [
        name
        for name in ("EDAENV_BROKER", "EDAENV_BROKER_URL", "EDAENV_DATABASE_URL")
        if not os.environ.get(name)
    ]
    if missing:
        raise UsageError(
            f"{', '.join(missing)} not set",
            hint="run it in the stack (edaenv up), or `edaenv relay` beside edaenv.yaml",
        )
    port = os.environ.get("EDAENV_METRICS_PORT")
    return Settings(
        broker=os.environ["EDAENV_BROKER"],
        broker_url=os.environ["EDAENV_BROKER_URL"],
        database_url=os.environ["EDAENV_DATABASE_URL"],
        metrics_port=int(port) if port else None,
        metrics_host=os.environ.get("EDAENV_METRICS_HOST") or "127.0.0.1",
    )


def from_config(config: Config) -> Settings:
    """The stack's published ports on 127.0.0.1 (EDAENV_BROKER_URL and EDAENV_DATABASE_URL win),
    for a relay or `dlq` command running on the host."""
    from edaenv.stack.endpoints import database_url, host_endpoint

    endpoint = host_endpoint(config)
    return Settings(
        broker=endpoint.broker, broker_url=endpoint.url, database_url=database_url(config)
    )


def connect_broker(settings: Settings) -> Broker:
    """The broker of the relay or the consumer (both connect here), its client library's
    INFO logging quieted."""
    from edaenv.brokers.base import Endpoint
    from edaenv.brokers.registry import connect

    quiet_client_logs()
    return connect(Endpoint(broker=settings.broker, url=settings.broker_url))
