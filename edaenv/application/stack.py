"""One stack as every command sees it from the host: its contracts, broker and database."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from edaenv.config import Config
from edaenv.engine.drift import advice, drift_if_running
from edaenv.errors import BrokerError, UsageError
from edaenv.names import shown

if TYPE_CHECKING:
    from edaenv.brokers.base import Broker
    from edaenv.engine.status import Health
    from edaenv.events.contracts import Contract
    from edaenv.wire import Message


class Stack:
    """The stack of one edaenv.yaml. Cheap to make: each part is read or opened when asked."""

    def __init__(self, config: Config):
        self.config = config

    # --- health ---------------------------------------------------------------------------

    def health(self) -> Health:
        """Every container of the stack, what edaenv.yaml has that is not there, and whether
        all of it is healthy."""
        from edaenv.engine.status import docker_client, health, snapshot

        states = snapshot(docker_client(), self.config.project)
        return health(states, self.config.services())

    # --- contracts ------------------------------------------------------------------------

    @cached_property
    def contracts(self) -> list[Contract]:
        """Every contract under the scaffold's events/, sorted by event and version."""
        from edaenv.events.contracts import load_contracts

        events = self.config.scaffold_dir / "events"
        found = load_contracts(events)
        if not found:
            raise UsageError(
                f"no event contracts in {events}",
                hint="add an <Event>.v<N>.schema.json there (see the one `edaenv init` wrote)",
            )
        return found

    def topics(self) -> list[str]:
        from edaenv.events.contracts import topics

        return topics(self.contracts)

    def contract(self, name: str | None, *, where: str = "TYPE") -> Contract:
        """`OrderPlaced` (its latest version), `OrderPlaced.v1`, or None: the first contract."""
        every = self.contracts
        if name is None:
            return every[0]
        matches = [c for c in every if name in (c.event, c.name)]
        if matches:
            return matches[-1]
        names = sorted({c.event for c in every} | {c.name for c in every})
        close = difflib.get_close_matches(name, names, n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(
            f"unknown event type {shown(name)}",
            where=where,
            hint=f"{guess}contracts: {', '.join(c.name for c in every)}",
        )

    def message(
        self,
        contract: Contract,
        data: Any,
        *,
        key: str | None = None,
        extra: dict[str, str] | None = None,
        value: bytes | None = None,
    ) -> Message:
        """The envelope the relay sends too: binary-mode CloudEvents keyed by the aggregate id
        (a random key when the data has none), with trace context."""
        import uuid

        from edaenv.events.envelope import Envelope, aggregate_id

        key = key or aggregate_id(contract, data) or str(uuid.uuid4())
        message = Envelope(contract, self.config.project).message(data, key, body=value)
        message.attributes.update(extra or {})
        return message

    # --- broker ---------------------------------------------------------------------------

    def broker(self) -> Broker:
        """The broker's adapter, connected to the stack's published port (or
        EDAENV_BROKER_URL); the caller closes it."""
        from edaenv.brokers.registry import connect
        from edaenv.stack.endpoints import host_endpoint

        try:
            return connect(host_endpoint(self.config))
        except BrokerError as exc:
            drifted = drift_if_running(self.config)
            if not drifted:
                raise
            raise BrokerError(
                f"{exc.message}: the running stack is not what edaenv.yaml describes ("
                + "; ".join(d.shown() for d in drifted)
                + ")",
                hint=advice(drifted),
            ) from None

    def dead_letter_source(self, topic: str) -> str:
        """What `tail` reads for a topic's dead letters on this stack's broker."""
        from edaenv.brokers.registry import dead_letter_source

        return dead_letter_source(self.config.broker, topic)

    # --- database -------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        """The stack's Postgres on the host (EDAENV_DATABASE_URL wins)."""
        from edaenv.stack.endpoints import database_url

        return database_url(self.config)

    @contextmanager
    def database(self) -> Iterator[Any]:
        """A connection to the stack's database, committed at the end: a missing outbox table
        is the user's to fix (exit 2), an unreachable server exit 3 as a broker's."""
        import psycopg

        from edaenv.stack.endpoints import connect_database

        url = self.database_url
        try:
            with connect_database(url) as conn:
                yield conn
        except psycopg.errors.UndefinedTable:
            raise UsageError(
                "the database has no outbox table",
                hint="apply db/migrations/001_outbox.sql of the scaffold (`edaenv up` does)",
            ) from None
        except psycopg.OperationalError as exc:
            where = url.rpartition("@")[2]
            raise BrokerError(
                f"cannot reach postgres at {where}: {str(exc).strip().splitlines()[0]}",
                hint="is the stack up? run `edaenv up`, or `edaenv status`",
            ) from None
