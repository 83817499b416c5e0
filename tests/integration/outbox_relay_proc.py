"""A relay process for the kill tests: the real Relay, publishing through the test's own Kafka
client. Usage: python outbox_relay_proc.py DATABASE_URL BOOTSTRAP TOPIC BATCH_SIZE"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

# A SIGTERM during the imports below (~0.5 s) must still mean a clean stop, not a default death;
# "ready" tells spawn_relay() that the handler is in place.
_terminated: list[int] = []
signal.signal(signal.SIGTERM, lambda *_: _terminated.append(1))
print("ready", flush=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outbox_support import make_broker  # noqa: E402

from edaenv.outbox.relay import Options, Relay  # noqa: E402


def main() -> None:
    url, bootstrap, topic, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    broker = make_broker(bootstrap)
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
