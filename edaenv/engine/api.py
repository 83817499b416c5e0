"""The few Engine API calls `up` makes while compose runs, over the stdlib.

Importing and setting up the Docker SDK takes ~0.2 s of CPU (0.6 s of wall time on a busy
2-core machine), taken from the containers starting meanwhile. `up` needs only a ping, a
container list, one inspect per started container and the event stream: plain HTTP over the
engine's unix socket. Other engine addresses (tcp://, ssh://) go through the SDK.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from edaenv.engine import discovery
from edaenv.engine.status import ENGINE_HINT, EngineUnreachable, docker_client
from edaenv.errors import EngineError


class Engine(Protocol):
    api_version: str  # the Engine API version it speaks, e.g. "1.41" (Docker 20.10)

    def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...

    def inspect(self, container_id: str) -> dict[str, Any] | None: ...

    def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...

    def has_image(self, name: str) -> bool: ...

    def events(self, filters: dict[str, list[str]]) -> Events: ...


class Events(Protocol):
    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


def connect(timeout: float = 10) -> Engine:
    """The engine the docker CLI would use (engine/discovery.py), checked with a ping."""
    endpoint = discovery.discover()
    address = endpoint.host
    if not address.startswith("unix://"):
        return _SdkEngine(timeout)
    engine = _UnixEngine(address[len("unix://") :], timeout)
    try:
        status, body = engine.request("/_ping")
        engine.api_version = engine.last_headers.get("Api-Version", "")
    except OSError as exc:
        raise discovery.unreachable(endpoint, str(exc.strerror or exc)) from None
    if status != 200:
        raise EngineUnreachable(
            f"the Docker engine at {address} answers {status} {body[:100]!r}", hint=ENGINE_HINT
        )
    return engine


class _Connection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("docker", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


@contextlib.contextmanager
def sdk_call(command: str) -> Iterator[None]:
    """A Docker SDK call, failing as EngineError. `command` is the docker command line that
    does the same, so that the user can run it and see for themselves."""
    from docker.errors import APIError, DockerException

    try:
        yield
    except DockerException as exc:
        said = exc.explanation if isinstance(exc, APIError) and exc.explanation else exc
        raise EngineError(f"`{command}` failed", command=command, output=str(said)) from None


class _UnixEngine:
    def __init__(self, path: str, timeout: float):
        self.path = path
        self.timeout = timeout
        self.api_version = ""
        self.last_headers: dict[str, str] = {}

    def request(self, url: str) -> tuple[int, bytes]:
        connection = _Connection(self.path, self.timeout)
        try:
            connection.request("GET", url)
            response = connection.getresponse()
            self.last_headers = dict(response.getheaders())
            return response.status, response.read()
        finally:
            connection.close()

    def _json(self, url: str) -> Any:
        status, body = self.request(url)
        if status != 200:
            raise EngineError(
                f"the Docker engine answered {status}",
                command=f"GET {url}",
                output=body.decode(errors="replace"),
            )
        return json.loads(body)

    def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        query = urlencode({"all": "1", "filters": json.dumps(filters)})
        result: list[dict[str, Any]] = self._json(f"/containers/json?{query}")
        return result

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        status, body = self.request(f"/containers/{quote(container_id)}/json")
        return json.loads(body) if status == 200 else None

    def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        found = self._json("/volumes?" + urlencode({"filters": json.dumps(filters)}))
        return list(found.get("Volumes") or [])

    def has_image(self, name: str) -> bool:
        status, _ = self.request(f"/images/{quote(name)}/json")
        return status == 200

    def events(self, filters: dict[str, list[str]]) -> Events:
        connection = _Connection(self.path, None)
        connection.request("GET", "/events?" + urlencode({"filters": json.dumps(filters)}))
        return _UnixEvents(connection, connection.getresponse())


class _UnixEvents:
    def __init__(self, connection: _Connection, response: http.client.HTTPResponse):
        self.connection = connection
        self.response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while line := self.response.readline():
            if line.strip():
                yield json.loads(line)

    def close(self) -> None:
        # shutdown() wakes the thread blocked reading the stream; close() alone would not.
        with contextlib.suppress(OSError):
            if self.connection.sock is not None:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()


class _SdkEngine:
    def __init__(self, timeout: float):
        self.client = docker_client(timeout)
        self.api_version = str(self.client.version().get("ApiVersion", ""))

    def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.client.api.containers(all=True, filters=filters)
        return result

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            result: dict[str, Any] = self.client.api.inspect_container(container_id)
        except NotFound:
            return None
        return result

    def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return list(self.client.api.volumes(filters=filters).get("Volumes") or [])

    def has_image(self, name: str) -> bool:
        from docker.errors import ImageNotFound

        try:
            self.client.api.inspect_image(name)
        except ImageNotFound:
            return False
        return True

    def events(self, filters: dict[str, list[str]]) -> Events:
        stream: Events = self.client.events(decode=True, filters=filters)
        return stream
