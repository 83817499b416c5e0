"""The scaffold's sample consumer in a process of its own, for the kill test (C2): it SIGKILLs
itself on its N-th acknowledgement, after the event's side effect committed and before the ack
reaches the broker. Usage: python outbox_consumer_proc.py MAIN_PY DB_URL BOOTSTRAP TOPIC GROUP N
(N = 0: never)."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbox_support import KafkaSubscription, KafkaTestBroker

from edaenv.brokers.base import Delivery


class KillingBroker(KafkaTestBroker):
    def __init__(self, bootstrap: str, kill_at: int):
        super().__init__(bootstrap)
        self.kill_at, self.acks = kill_at, 0

    def subscribe(self, topic: str, group: str) -> KafkaSubscription:
        subscription = super().subscribe(topic, group)
        ack = subscription.ack

        def ack_or_die(delivery: Delivery) -> None:
            self.acks += 1
            if self.acks == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            ack(delivery)

        subscription.ack = ack_or_die  # type: ignore[method-assign]
        return subscription


def main() -> None:
    main_py, url, bootstrap, topic, group, kill_at = sys.argv[1:7]
    spec = importlib.util.spec_from_file_location("sample_consumer", main_py)
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    consumer = module.Consumer(
        KillingBroker(bootstrap, int(kill_at)), url, topic=topic, group=group
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop.set())
    consumer.run()


if __name__ == "__main__":
    main()
