"""The running stack compared with edaenv.yaml, and the status of a stack with injected faults
(issue: every command says what actually happened)."""

from __future__ import annotations

import json
import time
import uuid

import yaml

from tests.e2e.conftest import MakeStack


def test_a_broker_changed_in_edaenv_yaml_is_reported_and_up_gives_it_its_own_volume(
    make_stack: MakeStack, stack_images: dict[str, str]
) -> None:
    """status said all healthy, env printed endpoints that did not exist, publish asked "is the
    stack up?", and up reused the old broker's volume (`broker-data`) for the new one."""
    stack = make_stack("nats", ())
    stack.up("--timeout", "120")
    config = stack.root / "edaenv.yaml"
    data = yaml.safe_load(config.read_text())
    data["broker"] = "rabbitmq"
    if "broker" in data.get("images", {}):
        data["images"]["broker"] = stack_images.get("broker-rabbitmq", "rabbitmq:4.1-management")
    config.write_text(yaml.safe_dump(data))
    hint = (
        "  hint: run `edaenv up` to replace the nats broker with rabbitmq (each broker keeps its "
        "data in a volume of its own: nats's stays in nats-data), or restore edaenv.yaml's "
        "broker\n"
    )
    drift = f"  broker: nats runs, edaenv.yaml says rabbitmq\n{hint}"
    as_json = [{"what": "broker", "running": "nats", "configured": "rabbitmq"}]

    status = stack.edaenv("status")
    assert (status.code, status.err) == (
        1,
        f"warning: the running stack differs from edaenv.yaml:\n{drift}",
    ), status.text
    assert json.loads(stack.edaenv("status", "--json").out)["drift"] == as_json

    env = stack.edaenv("env")
    assert env.code == 0 and "EDAENV_BROKER_URL=amqp://" in env.out, env.text
    assert env.err == (
        "warning: the running stack differs from edaenv.yaml, so some of these endpoints do not "
        f"exist:\n{drift}"
    )
    shown = stack.edaenv("env", "--json")
    assert json.loads(shown.out)["drift"] == as_json and shown.err == env.err

    order = {"orderId": str(uuid.uuid4()), "customerId": "c-1", "total": 1.5}
    published = stack.edaenv("publish", "OrderPlaced", "--data", json.dumps(order))
    assert published.code == 3, published.text
    assert published.err.startswith("error: cannot reach rabbitmq at 127.0.0.1:"), published.err
    assert published.err.endswith(
        ": the running stack is not what edaenv.yaml describes (broker: nats runs, edaenv.yaml "
        f"says rabbitmq)\n{hint}"
    ), published.err
    assert "is the stack up?" not in published.err

    up = stack.up("--timeout", "120")
    assert (
        "warning: edaenv.yaml changed since the stack started; up applies: broker nats -> "
        "rabbitmq\n"
        "  hint: the nats broker's container is replaced by a rabbitmq one on its own volume "
        "rabbitmq-data; nats's data stays in nats-data (`edaenv down --volumes` deletes every "
        "volume of the stack)\n"
    ) in up.err
    volumes = {v.name.split("_", 1)[1]: v for v in stack.volumes()}
    assert set(volumes) == {"nats-data", "rabbitmq-data"}
    (broker,) = stack.containers()
    assert broker.labels["dev.edaenv.broker"] == "rabbitmq"
    assert [m["Name"] for m in broker.attrs["Mounts"] if m["Type"] == "volume"] == [
        volumes["rabbitmq-data"].name
    ]
    after = stack.edaenv("status")
    assert after.code == 0 and after.err == "", after.text


def test_status_names_an_injected_fault_and_the_command_that_ends_it(
    make_stack: MakeStack,
) -> None:
    """status said "`edaenv up` starts the stack" for a broker that `edaenv inject` paused."""
    stack = make_stack("nats", ())
    stack.up("--timeout", "120")
    paused = stack.edaenv("inject", "pause", "broker", "--json")
    assert paused.code == 0, paused.text
    fault = json.loads(paused.out)["id"]
    status = stack.edaenv("status")
    assert (status.code, status.err) == (
        1,
        "warning: injected faults are active:\n"
        f"  broker is paused (fault {fault} from `edaenv inject pause`): "
        f"`edaenv inject heal {fault}` ends it\n"
        "  hint: `edaenv inject heal --all` ends every one\n",
    ), status.text
    assert [f["id"] for f in json.loads(stack.edaenv("status", "--json").out)["active_faults"]] == [
        fault
    ]

    # The record outlives the container: after `down` and `up` the fault holds nothing.
    assert stack.edaenv("down").code == 0
    stack.up("--timeout", "120")
    status = stack.edaenv("status")
    assert (status.code, status.err) == (0, ""), status.text

    paused = stack.edaenv("inject", "pause", "broker", "--json")
    fault = json.loads(paused.out)["id"]
    assert stack.edaenv("inject", "heal", fault).code == 0
    deadline = time.monotonic() + 60  # the health check runs again after the unpause
    while (status := stack.edaenv("status")).code != 0:
        assert time.monotonic() < deadline, status.text
        time.sleep(1)
    assert status.err == ""
