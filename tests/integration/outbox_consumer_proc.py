"""The scaffold's sample consumer in a process of its own, for the kill test (C2): it SIGKILLs
itself on its N-th acknowledgement, after the event's side effect committed and before the ack
reaches the broker. The consumer runs over edaenv's own adapter; only its subscription's ack is
wrapped, to die at that moment.

Usage: python outbox_consumer_proc.py MAIN_PY BROKER TOPIC GROUP N (N = 0: never), with
EDAENV_TEST_DATABASE_URL and EDAENV_TEST_BROKER_URL in the environment."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from typing import Any

from edaenv.brokers.base import Delivery, Endpoint, Subscription
from edaenv.brokers.registry import connect


def dying_at(kill_at: int, broker: Any) -> Any:
    """The adapter, with subscriptions whose `kill_at`-th ack kills the process first."""
    subscribe, acks = broker.subscribe, [0]

    def subscribe_and_die(topic: str, group: str) -> Subscription:
        subscription = subscribe(topic, group)
        ack = subscription.ack

        def ack_or_die(delivery: Delivery) -> None:
            acks[0] += 1
            if acks[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            ack(delivery)

        subscription.ack = ack_or_die  # type: ignore[method-assign]
        return subscription

    broker.subscribe = subscribe_and_die
    return broker


def main() -> None:
    main_py, kind, topic, group, kill_at = sys.argv[1:6]
    spec = importlib.util.spec_from_file_location("sample_consumer", main_py)
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    broker = connect(Endpoint(kind, os.environ["EDAENV_TEST_BROKER_URL"]))
    consumer = module.Consumer(
        dying_at(int(kill_at), broker),
        os.environ["EDAENV_TEST_DATABASE_URL"],
        topic=topic,
        group=group,
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop.set())
    consumer.run()


if __name__ == "__main__":
    main()
