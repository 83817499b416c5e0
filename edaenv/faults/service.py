"""What the `inject` commands share: healing any kind of fault, status, and self-healing timers.

`--for DURATION` spawns a detached `edaenv inject heal ID --after N` process rather than
blocking: a script or test can break something, carry on, and watch the stack recover. The
healer's pid is in the record; an earlier manual heal stops it, and a healer that wakes to a
fault already healed does nothing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edaenv.config import Config
from edaenv.errors import UsageError
from edaenv.faults import containers
from edaenv.faults.state import Fault, FaultStore

MESSAGE_KINDS = ("delay",)


def store(config: Config) -> FaultStore:
    return FaultStore(config.generated_dir)


def schedule_heal(config: Config, fault: Fault, seconds: float) -> Fault:
    """Returns the fault with its `until` and `healer_pid`."""
    log = config.generated_dir / "faults" / f"heal-{fault.id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "edaenv",
        "--config",
        str(config.path),
        "inject",
        "heal",
        fault.id,
        "--after",
        f"{seconds:g}",
    ]
    with log.open("ab") as out:
        healer = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=config.root,
        )
    until = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    store(config).update(fault.id, until=until, healer_pid=healer.pid)
    return dataclasses.replace(fault, until=until, healer_pid=healer.pid)


def heal(
    config: Config, targets: list[str], *, all_: bool = False, quiet_missing: bool = False
) -> list[Fault]:
    """Heal the named faults (ids or roles), or all, in heal_order(). Returns them, each with
    a `heal_result`."""
    records = store(config)
    active = records.active()
    if all_:
        chosen = list(active)
    else:
        chosen = []
        for target in targets:
            matched = [f for f in active if target in (f.id, f.target)]
            if (
                not matched
                and not quiet_missing
                and not any(f.id == target for f in records.history())
            ):
                raise UsageError(
                    f"no active fault or role '{target}'",
                    hint="`edaenv inject status` lists the active faults",
                )
            chosen += [f for f in matched if f not in chosen]
    healed = []
    for fault in heal_order(chosen):
        if fault.kind in MESSAGE_KINDS:
            from edaenv.faults import messages

            result = messages.release(config, fault)
        else:
            result = containers.heal(config, fault)
        if records.resolve(fault.id, "heal --after" if quiet_missing else "heal") is None:
            continue  # healed meanwhile by someone else
        _stop_healer(fault)
        healed.append(dataclasses.replace(fault, heal_result=result))
    return healed


def heal_order(faults: list[Fault]) -> list[Fault]:
    """Newest first, except that faults which gave up an address (kill, stop, partition) come
    first, by address. Docker hands out the lowest free address of a network, so reconnecting
    and restarting in that order gives each container its address back: clients of the stack
    keep working connections, as after a real partition or crash."""
    freed = [f for f in faults if f.kind in ("kill", "stop", "partition") and f.addresses]
    freed.sort(key=lambda f: min(ipaddress.ip_address(a) for a in (f.addresses or {}).values()))
    return freed + [f for f in reversed(faults) if f not in freed]


def _stop_healer(fault: Fault) -> None:
    pid = fault.healer_pid
    if not pid or pid == os.getpid():
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if fault.id.encode() in cmdline:  # the pid is still our healer, not a reused pid
        os.kill(pid, signal.SIGTERM)


def status(config: Config) -> list[Fault]:
    faults = []
    for fault in store(config).active():
        if fault.kind in MESSAGE_KINDS:
            now = f"{len(fault.held or ())} events held"
        else:
            now = containers.container_status(config, fault)
        faults.append(dataclasses.replace(fault, now=now))
    return faults


def wait_healthy(config: Config, roles: list[str], timeout: float) -> list[str]:
    return containers.wait_healthy(config, roles, timeout)
