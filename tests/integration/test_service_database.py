"""edaenv.service against the real PostgreSQL: the connection options and the idempotency guard
in the caller's transaction."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from outbox_support import SERVICES, fresh_database, pg_url, require_port

from edaenv import service

pytestmark = pytest.mark.postgres


@pytest.fixture
def db() -> Iterator[str]:
    with fresh_database() as url:  # processed_events comes with the outbox migration
        yield url


def test_claim_new_returns_each_id_once_across_transactions_and_consumers(db: str) -> None:
    with service.connect_database(db) as conn:
        with conn.transaction():
            assert service.claim_new(conn, "billing", ["e-1", "e-2", "e-1"]) == {"e-1", "e-2"}
            assert service.claim_new(conn, "billing", ["e-1", "e-3"]) == {"e-3"}
            assert service.claim_new(conn, "shipping", ["e-1"]) == {"e-1"}  # its own record
        assert service.claim_new(conn, "billing", iter(["e-2", "e-4"])) == {"e-4"}
        assert service.claim_new(conn, "billing", []) == set()


def test_a_rolled_back_claim_leaves_the_event_to_handle(db: str) -> None:
    """The claim commits with the side effect or not at all."""
    with service.connect_database(db) as conn:
        with contextlib.suppress(ZeroDivisionError), conn.transaction():
            assert service.claim_new(conn, "billing", ["e-1"]) == {"e-1"}
            _ = 1 / 0  # the side effect fails
        assert service.claim_new(conn, "billing", ["e-1"]) == {"e-1"}


def test_two_transactions_claiming_one_event_give_it_to_one(db: str) -> None:
    with service.connect_database(db) as first, service.connect_database(db) as second:
        got: list[set[str]] = []
        with first.transaction():
            assert service.claim_new(first, "billing", ["e-1"]) == {"e-1"}

            def claim() -> None:
                with second.transaction():
                    got.append(service.claim_new(second, "billing", ["e-1", "e-2"]))

            racer = threading.Thread(target=claim)
            racer.start()
            racer.join(1.0)
            assert racer.is_alive()  # waits for the first transaction on e-1's key
        racer.join(10)
        assert got == [{"e-2"}]


def test_connect_database_reads_text_as_utf8_from_an_sql_ascii_database() -> None:
    require_port("PostgreSQL", int(SERVICES["EDAENV_TEST_PG_PORT"]))
    name = f"edaenv_service_{uuid.uuid4().hex[:12]}"
    admin_url = pg_url(SERVICES["EDAENV_TEST_PG_DB"])
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "  # type: ignore[arg-type,unused-ignore]
            "TEMPLATE template0"
        )
    try:
        settings = service.Settings(broker="kafka", broker_url="-", database_url=pg_url(name))
        with service.connect_database(settings) as conn:
            assert conn.execute("SELECT 'Zürich'").fetchone() == ("Zürich",)
            parameters = conn.info.get_parameters()
            assert parameters["keepalives"] == "1"
            assert parameters["connect_timeout"] == "5"
            assert conn.autocommit
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type,unused-ignore]
