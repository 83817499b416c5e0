"""Live service states from the engine's event stream while `docker compose up` runs.

Events, not polling: listing or inspecting containers every fraction of a second while the
engine creates and starts them slowed `up` by about a second on a 2-core machine (the engine
serialises those calls with container start-up); the event stream costs it nothing.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import TYPE_CHECKING, Any

from edaenv.engine.status import PROJECT_LABEL, SERVICE_LABEL, ServiceState, summary_state

if TYPE_CHECKING:
    from edaenv.engine.api import Engine


def snapshot(engine: Engine, project: str) -> list[ServiceState]:
    """Every container of the project, from one list call."""
    return _states(engine.containers({"label": [f"{PROJECT_LABEL}={project}"]}))


def _states(found: list[dict[str, Any]]) -> list[ServiceState]:
    return sorted((summary_state(attrs) for attrs in found), key=lambda s: (s.service, s.id))


class Watch:
    """Service -> state, kept current from container events of one compose project."""

    def __init__(self, engine: Engine, project: str):
        self.engine = engine
        # Subscribe before the snapshot: a change in between shows up as an event, not a gap.
        self._stream = engine.events(
            {"type": ["container"], "label": [f"{PROJECT_LABEL}={project}"]}
        )
        self.states: dict[str, ServiceState] = {}
        self._ids: dict[str, str] = {}  # service -> id of its current container
        # Containers created or started since the watch began: only their failures are this
        # run's (an old container stopped for a recreate dies too, and that is no failure).
        self.fresh: set[str] = set()
        # Container id -> its restart policy, read at its start: a container the engine will
        # start again is restarting when it dies, not failed.
        self._restart: dict[str, dict[str, Any]] = {}
        # The engine's container list as the watch began: `up` reads drift from it too.
        self.listed = engine.containers({"label": [f"{PROJECT_LABEL}={project}"]})
        for state in _states(self.listed):
            self.states[state.service] = state
            self._ids[state.service] = state.id
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                self._events.put(event)
        except Exception:  # the stream closed under us: close() was called
            return

    def update(self, wait: float) -> bool:
        """Apply the events that arrive within `wait` seconds; True when something changed."""
        changed = False
        try:
            event = self._events.get(timeout=wait)
            while True:
                changed = self._apply(event) or changed
                event = self._events.get_nowait()
        except queue.Empty:
            return changed

    def wake(self) -> None:
        """End a waiting update() now (an entry that names no service changes nothing)."""
        self._events.put({})

    def close(self) -> None:
        self._stream.close()

    def _apply(self, event: dict[str, Any]) -> bool:
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        service = attributes.get(SERVICE_LABEL)
        action = str(event.get("status") or event.get("Action") or "")
        container_id = str(actor.get("ID") or event.get("id") or "")
        if not service:
            return False
        current = self.states.get(service)
        if action == "destroy":
            if self._ids.get(service) == container_id:
                self.states.pop(service, None)
                return True
            return False
        if action in ("create", "start"):
            self.fresh.add(container_id)
        if action == "create":
            self._ids[service] = container_id
            name = attributes.get("name", "")
            state = ServiceState(service, name, "created", None, None, None, None, id=container_id)
        elif current is None or self._ids.get(service) != container_id:
            return False  # e.g. the old container of a service being recreated
        elif action == "start":
            state = dataclasses.replace(
                current, state="running", health=self._started(container_id)
            )
        elif action.startswith("health_status:"):
            state = dataclasses.replace(current, health=action.split(":", 1)[1].strip())
        elif action == "die":
            code = attributes.get("exitCode")
            exit_code = int(code) if code is not None else None
            again = restarts(self._restart.get(container_id) or {}, exit_code)
            state = dataclasses.replace(
                current, state="restarting" if again else "exited", exit_code=exit_code
            )
        else:
            return False
        self.states[service] = state
        return state != current

    def _started(self, container_id: str) -> str | None:
        """Health after a start: "starting" when the container has a health check, else None.
        Its restart policy is kept for when it dies."""
        attrs = self.engine.inspect(container_id) or {}
        self._restart[container_id] = {
            **((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}),
            "RestartCount": attrs.get("RestartCount") or 0,
        }
        check = (attrs.get("Config") or {}).get("Healthcheck") or {}
        has_check = bool(check.get("Test")) and check["Test"][0] != "NONE"
        return "starting" if has_check else None


def restarts(policy: dict[str, Any], exit_code: int | None) -> bool:
    """Whether the engine starts a container again after it exited with `exit_code`, by its
    restart policy (HostConfig.RestartPolicy, plus the RestartCount it had when it started)."""
    name = policy.get("Name") or "no"
    if name in ("always", "unless-stopped"):
        return True
    if name != "on-failure" or exit_code == 0:
        return False
    limit = int(policy.get("MaximumRetryCount") or 0)
    return limit == 0 or int(policy.get("RestartCount") or 0) < limit
