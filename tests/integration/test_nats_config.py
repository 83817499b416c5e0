"""The NATS configuration edaenv renders from .env, read by a real nats-server: any password a
user may put in .env must reach the server exactly (quotes, backslashes, `$`, `#`, spaces,
non-ASCII and control characters), since NATS config syntax would otherwise read it as a
variable, a comment, a number or an include."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import nats
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edaenv.stack.render import nats_config

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="scripts/test installs nats-server"
)
# Any text: .env admits only URL-safe values (read_env refuses the rest), but the file must
# not depend on that.
PASSWORDS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def logs_in(conf: Path, user: str, password: str) -> bool:
    port = free_port()
    server = subprocess.Popen(
        ["nats-server", "-c", str(conf), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if server.poll() is not None:
                raise AssertionError(f"nats-server refused the file: {server.stderr.read()!r}")  # type: ignore[union-attr]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)

        async def connect(secret: str) -> bool:
            try:
                client = await nats.connect(
                    f"nats://127.0.0.1:{port}",
                    user=user,
                    password=secret,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    connect_timeout=2,
                )
            except Exception:
                return False
            await client.close()
            return True

        right = asyncio.run(connect(password))
        assert not asyncio.run(connect(password + "x")), "a wrong password got in"
        return right
    finally:
        server.terminate()
        server.wait(timeout=10)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(password=PASSWORDS)
@example(password='q"uote \\ $VAR #c ünï 😀')
@example(password="\ta\nb\x01\x7f\r")
@example(password="123")  # a number, unquoted
@example(password="include /etc/passwd")
def test_any_password_reaches_the_server_exactly(tmp_path: Path, password: str) -> None:
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    conf = root / "nats.conf"
    # The container's paths and ports, moved to this test's own (the auth block is untouched).
    text = nats_config("app", password)
    moved = text.replace('"/data"', f'"{root / "js"}"').replace("http_port: 8222", "")
    assert moved.count("\n") == text.count("\n") and "authorization" in moved
    conf.write_text(moved, encoding="utf-8")
    assert logs_in(conf, "app", password)
