"""The RabbitMQ objects behind a topic, defined once: the adapter declares them
(`ensure_topology`) and the stack's definitions.json, rendered from the same lists, imports them
at boot. Kept apart from the adapter so that rendering does not import the AMQP client."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# A stream queue for `edaenv tail`: it replays without taking anything.
LOG_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-length-bytes": 512 * 1024 * 1024,
    "x-stream-max-segment-size-bytes": 16 * 1024 * 1024,
}


def queue_name(topic: str) -> str:
    """The sample consumer's queue, bound to the topic exchange with `#`."""
    return f"{topic}.consumer"


def dlx_name(topic: str) -> str:
    return f"{topic}.dlx"


def dlq_name(topic: str) -> str:
    return f"{topic}.dlq"


def log_name(topic: str) -> str:
    return f"{topic}.log"


@dataclass(frozen=True)
class Exchange:
    name: str
    type: str


@dataclass(frozen=True)
class Queue:
    name: str
    source: str  # the exchange it is bound to
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


def exchanges(topic: str) -> list[Exchange]:
    return [Exchange(topic, "topic"), Exchange(dlx_name(topic), "fanout")]


def queues(topic: str) -> list[Queue]:
    return [
        Queue(queue_name(topic), topic, "#", {"x-dead-letter-exchange": dlx_name(topic)}),
        Queue(dlq_name(topic), dlx_name(topic), ""),
        Queue(log_name(topic), topic, "#", dict(LOG_ARGUMENTS)),
    ]


def definitions(topics: Iterable[str], user: str, password_hash: str) -> dict[str, Any]:
    """definitions.json: the user (RabbitMQ then creates no default one) and every topic's
    exchanges, queues and bindings, durable, on vhost `/`."""
    every = list(dict.fromkeys(topics))
    return {
        "users": [
            {
                "name": user,
                "password_hash": password_hash,
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"],
            }
        ],
        "vhosts": [{"name": "/"}],
        "permissions": [
            {"user": user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": "/",
                "type": exchange.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
            for topic in every
            for exchange in exchanges(topic)
        ],
        "queues": [
            {
                "name": queue.name,
                "vhost": "/",
                "durable": True,
                "auto_delete": False,
                "arguments": queue.arguments,
            }
            for topic in every
            for queue in queues(topic)
        ],
        "bindings": [
            {
                "source": queue.source,
                "vhost": "/",
                "destination": queue.name,
                "destination_type": "queue",
                "routing_key": queue.routing_key,
                "arguments": {},
            }
            for topic in every
            for queue in queues(topic)
        ],
    }
