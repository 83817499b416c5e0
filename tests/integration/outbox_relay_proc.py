"""A relay process for the kill tests: the real Relay, publishing through edaenv's adapter.
Usage: EDAENV_TEST_BROKER_URL=URL python outbox_relay_proc.py DATABASE_URL BROKER TOPIC BATCH_SIZE
(BROKER: kafka, rabbitmq or nats; the URL, which may hold credentials, comes by environment)."""

from __future__ import annotations

import os
import signal
import sys

# A SIGTERM during the imports below (~0.5 s) must still mean a clean stop, not a default death;
# "ready" tells spawn_relay() that the handler is in place.
_terminated: list[int] = []
signal.signal(signal.SIGTERM, lambda *_: _terminated.append(1))
print("ready", flush=True)

from edaenv.brokers.registry import connect  # noqa: E402
from edaenv.outbox.relay import Options, Relay  # noqa: E402
from edaenv.wire import Endpoint  # noqa: E402


def main() -> None:
    url, kind, topic, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    broker = connect(Endpoint(kind, os.environ["EDAENV_TEST_BROKER_URL"], connect_timeout=10.0))
    relay = Relay(
        url,
        broker,
        route=lambda row: topic,
        topics=[topic],
        options=Options(batch_size=batch, poll_interval=0.2),
    )
    signal.signal(signal.SIGTERM, lambda *_: relay.stop())
    if _terminated:
        relay.stop()
    relay.run()
    broker.close()


if __name__ == "__main__":
    main()
