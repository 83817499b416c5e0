"""The relay as a long-running service: metrics endpoint, tracing, SIGTERM, logging. Used by
`edaenv relay` on the host and by `python -m edaenv.outbox` in the stack's relay container."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from edaenv.errors import UsageError
from edaenv.outbox.relay import Options, Relay, contract_router
from edaenv.outbox.runtime import Settings, connect_broker, prefer_io_threads


def run_relay(settings: Settings, events_dir: Path, options: Options) -> None:
    """Run until SIGTERM or SIGINT; the batch in flight is finished (published and marked)."""
    from edaenv.events.contracts import load_contracts, topics
    from edaenv.outbox import tracing
    from edaenv.outbox.metrics import RelayMetrics, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    prefer_io_threads()
    contracts = load_contracts(events_dir)
    if not contracts:
        raise UsageError(
            f"no event contracts in {events_dir}: the relay cannot tell the topics",
            hint="add <event>.v<N>.schema.json files with an x-edaenv topic "
            "(edaenv init writes one)",
        )
    tracer, provider = tracing.setup(os.environ.get("OTEL_SERVICE_NAME", "relay"))
    metrics = RelayMetrics()
    broker = connect_broker(settings)
    relay = Relay(
        settings.database_url,
        broker,
        contract_router(contracts),
        options=options,
        metrics=metrics,
        tracer=tracer,
        topics=topics(contracts),
    )
    if settings.metrics_port is not None:
        serve(settings.metrics_port, metrics.registry, lambda: relay.healthy)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: relay.stop())
    logging.getLogger("edaenv.relay").info(
        "relay: %s -> %s (%s), batches of %d",
        _safe(settings.database_url),
        settings.broker,
        ", ".join(topics(contracts)),
        options.batch_size,
    )
    try:
        relay.run()
    finally:
        broker.close()
        if provider is not None:
            provider.shutdown()


def _safe(url: str) -> str:
    """A connection URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.partition(':')[0]}@{host}"
