"""Broker-neutral names behind a topic. Each broker's own objects (queues, streams, dead-letter
topics) are named by its adapter in edaenv/brokers/."""

from __future__ import annotations


def consumer_group(project: str) -> str:
    return f"{project}-consumer"
