"""The stack as host clients see it: published ports on 127.0.0.1 plus the secrets of .env.

The single place that turns `config.ports()` and `.env` into URLs; `edaenv env` prints them as
EDAENV_* variables and `edaenv up` shows them as a table; the host's clients (commands, the
relay run on the host, the pytest plugin) connect through host_endpoint and connect_database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edaenv import wire
from edaenv.brokers import registry
from edaenv.config import Config
from edaenv.errors import UsageError
from edaenv.stack.dotenv import read_env

if TYPE_CHECKING:
    import psycopg

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Endpoint:
    service: str
    what: str
    variable: str
    url: str
    secret: str | None = None  # the part of the url to mask in displays

    def shown(self) -> str:
        return self.url.replace(self.secret, "****") if self.secret else self.url


def endpoints(config: Config, secrets: dict[str, str] | None = None) -> list[Endpoint]:
    secrets = read_env(config.env_file) if secrets is None else secrets
    ports = config.ports()
    found = [_broker(config, ports["broker"], secrets)]
    extra = registry.profile(config.broker).extra
    if extra is not None:
        port, what, variable = extra
        found.append(Endpoint("broker", what, variable, _http(ports["broker"][port])))
    if "postgres" in ports:
        user, password = secrets["POSTGRES_USER"], secrets["POSTGRES_PASSWORD"]
        found.append(
            Endpoint(
                "postgres",
                "database (DSN)",
                "EDAENV_DATABASE_URL",
                f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{HOST}:"
                f"{ports['postgres']['postgres']}/{quote(secrets['POSTGRES_DB'], safe='')}",
                secret=quote(password, safe=""),
            )
        )
    for service, port, what, variable in (
        ("relay", "metrics", "metrics", "EDAENV_RELAY_METRICS_URL"),
        ("consumer", "metrics", "metrics", "EDAENV_CONSUMER_METRICS_URL"),
        ("jaeger", "ui", "tracing UI", "EDAENV_JAEGER_URL"),
        ("jaeger", "otlp-http", "OTLP/HTTP in", "EDAENV_OTLP_ENDPOINT"),
        ("prometheus", "http", "metrics UI", "EDAENV_PROMETHEUS_URL"),
        ("grafana", "http", "dashboards", "EDAENV_GRAFANA_URL"),
    ):
        if service in ports:
            found.append(Endpoint(service, what, variable, _http(ports[service][port])))
    return found


def environment(config: Config, secrets: dict[str, str] | None = None) -> dict[str, str]:
    """EDAENV_* variables for scripts and tests (credentials included)."""
    found = endpoints(config, secrets)
    # EDAENV_COMPOSE_PROJECT, not EDAENV_PROJECT: `set -a; eval "$(edaenv env)"` exports these,
    # and EDAENV_PROJECT would then override `project:` in every other repository's commands.
    env = {"EDAENV_COMPOSE_PROJECT": config.project, "EDAENV_BROKER": config.broker}
    env.update({endpoint.variable: endpoint.url for endpoint in found})
    if registry.profile(config.broker).kafka_api:
        env["EDAENV_KAFKA_BOOTSTRAP_SERVERS"] = env["EDAENV_BROKER_URL"]
    return env


def _http(port: int) -> str:
    return f"http://{HOST}:{port}"


def _broker(config: Config, ports: dict[str, int], secrets: dict[str, str]) -> Endpoint:
    profile = registry.profile(config.broker)
    address = f"{HOST}:{ports[profile.client_port]}"
    if profile.credentials is None:
        return Endpoint("broker", profile.what, "EDAENV_BROKER_URL", address)
    user = secrets[f"{profile.credentials}_USER"]
    password = quote(secrets[f"{profile.credentials}_PASSWORD"], safe="")
    url = f"{profile.scheme}://{quote(user, safe='')}:{password}@{address}{profile.path}"
    return Endpoint("broker", profile.what, "EDAENV_BROKER_URL", url, secret=password)


# --- the host's clients ----------------------------------------------------------------


def host_endpoint(config: Config) -> wire.Endpoint:
    """The stack's broker on 127.0.0.1 (ports from edaenv.yaml, credentials from .env);
    EDAENV_BROKER_URL wins, as it does in the relay and consumer containers."""
    url = os.environ.get("EDAENV_BROKER_URL")
    if not url:
        url = environment(config)["EDAENV_BROKER_URL"]
    return wire.Endpoint(broker=config.broker, url=url)


def database_url(config: Config) -> str:
    """The stack's Postgres on 127.0.0.1; EDAENV_DATABASE_URL wins."""
    url = os.environ.get("EDAENV_DATABASE_URL")
    if url:
        return url
    if not config.has("postgres"):
        raise UsageError(
            "postgres is off in edaenv.yaml, so there is no outbox",
            hint="set `components: {postgres: true, outbox: true}`, or publish "
            "without --via-outbox",
        )
    from edaenv.stack.endpoints import environment

    return environment(config)["EDAENV_DATABASE_URL"]


def connect_database(url: str, *, timeout: int = 5) -> psycopg.Connection[Any]:
    """A host-side connection to the stack's Postgres. Text always comes as UTF-8: against a
    database created with encoding SQL_ASCII, psycopg would otherwise give text as bytes."""
    import psycopg

    return psycopg.connect(url, connect_timeout=timeout, client_encoding="UTF8")
