"""The relay as a long-running service: metrics endpoint, tracing, SIGTERM, logging. Used by
`edaenv relay` on the host and by `python -m edaenv.outbox` in the stack's relay container."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from edaenv.errors import UsageError
from edaenv.outbox.relay import Options, Relay, contract_router
from edaenv.outbox.runtime import Settings, connect_broker, prefer_io_threads

if TYPE_CHECKING:
    from edaenv.events.contracts import Contract
    from edaenv.outbox.metrics import RelayMetrics
    from edaenv.outbox.tracing import Tracer


def open_relay(
    settings: Settings,
    contracts: list[Contract],
    options: Options,
    *,
    metrics: RelayMetrics | None = None,
    tracer: Tracer | None = None,
) -> Relay:
    """A relay publishing to the contracts' topics, its broker connected (`relay.broker`)."""
    from edaenv.events.contracts import topics

    prefer_io_threads()
    return Relay(
        settings.database_url,
        connect_broker(settings),
        contract_router(contracts),
        options=options,
        metrics=metrics,
        tracer=tracer,
        topics=topics(contracts),
    )


def run_relay(settings: Settings, events_dir: Path, options: Options) -> None:
    """Run until SIGTERM or SIGINT; the batch in flight is finished (published and marked)."""
    from edaenv.events.contracts import load_contracts, topics
    from edaenv.outbox import tracing
    from edaenv.outbox.metrics import RelayMetrics, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    contracts = load_contracts(events_dir)
    if not contracts:
        raise UsageError(
            f"no event contracts in {events_dir}: the relay cannot tell the topics",
            hint="add <event>.v<N>.schema.json files with an x-edaenv topic "
            "(edaenv init writes one)",
        )
    tracer, provider = tracing.setup(os.environ.get("OTEL_SERVICE_NAME", "relay"))
    metrics = RelayMetrics()
    relay = open_relay(settings, contracts, options, metrics=metrics, tracer=tracer)
    if settings.metrics_port is not None:
        serve(settings.metrics_port, metrics.registry, lambda: relay.healthy, settings.metrics_host)
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
        relay.broker.close()
        if provider is not None:
            provider.shutdown()


def _safe(url: str) -> str:
    """A connection URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.partition(':')[0]}@{host}"
