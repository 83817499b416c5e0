"""Postgres 18's data layout: the rendered volume holds the cluster, so data outlives `down`; a
volume where 17 kept its data is refused by the image (the stand-in refuses it as the official
postgres:18 entrypoint does), which is what the fragment's mount point guards against."""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.conftest import MakeStack

pytestmark = pytest.mark.engine


def test_the_postgres_volume_keeps_the_data_across_down_and_up(make_stack: MakeStack) -> None:
    stack = make_stack("nats", ("postgres",))
    stack.up("--timeout", "120")
    dsn = stack.env()["EDAENV_DATABASE_URL"]
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('survives down')")

    (container,) = [
        c for c in stack.containers() if c.labels.get("com.docker.compose.service") == "postgres"
    ]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    # One named volume over the image's VOLUME: no anonymous volume catching the cluster.
    assert mounts["/var/lib/postgresql"]["Name"] == f"{stack.project}_postgres-data"
    assert [m["Destination"] for m in mounts.values() if m["Type"] == "volume"] == [
        "/var/lib/postgresql"
    ]

    assert stack.edaenv("down").code == 0  # volumes kept
    stack.up("--timeout", "120")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("survives down",)]


def test_a_volume_at_the_pre_18_data_directory_is_refused(
    docker_engine: object, stack_images: dict[str, str]
) -> None:
    import docker

    client = docker.from_env(timeout=60)
    volume = client.volumes.create()
    container = client.containers.create(
        stack_images["postgres"],
        environment={"POSTGRES_PASSWORD": "x"},
        volumes={volume.name: {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
    )
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 1
        logs = container.logs(stdout=False, stderr=True).decode()
        assert "there appears to be PostgreSQL data in:" in logs
        assert "/var/lib/postgresql/data (unused mount/volume)" in logs
    finally:
        container.remove(force=True, v=True)  # with the anonymous volume of the image's VOLUME
        volume.remove(force=True)
