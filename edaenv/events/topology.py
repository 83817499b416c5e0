"""Names of the broker objects behind a topic, the same for edaenv, the relay and the consumer."""

from __future__ import annotations

import re


def dlq_topic(topic: str) -> str:
    """Kafka/Redpanda dead-letter topic."""
    return f"{topic}.dlq"


def consumer_group(project: str) -> str:
    return f"{project}-consumer"


def rabbit_queue(topic: str) -> str:
    """The sample consumer's queue, bound to the topic exchange with `#`."""
    return f"{topic}.consumer"


def rabbit_dlx(topic: str) -> str:
    return f"{topic}.dlx"


def rabbit_dlq(topic: str) -> str:
    return f"{topic}.dlq"


def nats_stream(topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", topic).upper()


def nats_subject(topic: str, key: str) -> str:
    """The aggregate id is the last subject token, so per-subject order is per-aggregate order."""
    return f"{topic}.{re.sub(r'[.*> ]', '_', key)}"


def nats_dlq_stream(topic: str) -> str:
    return f"DLQ_{nats_stream(topic)}"


def nats_dlq_subject(topic: str, key: str = ">") -> str:
    return f"dlq.{topic}.{key}"


def rabbit_log(topic: str) -> str:
    """A stream queue bound with `#`: `edaenv tail` replays it without taking anything."""
    return f"{topic}.log"


# Declared identically by render.py (definitions.json) and the adapter (a mismatch is refused).
RABBIT_LOG_ARGUMENTS = {
    "x-queue-type": "stream",
    "x-max-length-bytes": 512 * 1024 * 1024,
    "x-stream-max-segment-size-bytes": 16 * 1024 * 1024,
}
