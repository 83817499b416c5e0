"""What `up` waits for and what it reports: restart policies and one-shots are no failures,
a pull it cannot do is named before it happens, and --json is one object on stdout.

(The failures themselves, an image that cannot start, a consumer that exits, an image that
cannot be pulled, `logs` without a stack and `down --rmi`, are in test_commands_say.py.)
"""

from __future__ import annotations

import json

from tests.e2e.conftest import MakeStack

FLAKY_CONSUMER = """\
services:
  consumer:
    # Fails its first start, as a service does whose dependency is not quite there yet; the
    # engine starts it again by its restart policy.
    command: ["bash", "-c", "if [ ! -e /tmp/started-once ]; then touch /tmp/started-once; \
echo 'first start fails'; exit 4; fi; exec python3 /app/consumer/main.py"]
    restart: on-failure
  migrate:
    image: {python}
    command: ["python3", "-c", "print('migrated')"]
  relay:
    depends_on:
      migrate:
        condition: service_completed_successfully
"""


def test_a_restarted_service_and_a_finished_one_shot_are_no_failures(
    make_stack: MakeStack, stack_images: dict[str, str]
) -> None:
    """`up` stopped at the first exit of any container: a consumer its restart policy brings
    back, and a one-shot migration that exited 0 as designed, failed the whole `up`."""
    stack = make_stack("nats", ("postgres", "outbox", "consumer"))
    stack.override(FLAKY_CONSUMER.format(python=stack_images.get("python", "python:3.12-slim")))
    result = stack.edaenv("up", "--json", "--timeout", "240", timeout=600)
    assert result.code == 0, result.text
    report = json.loads(result.out)  # stdout holds the one JSON object and nothing else
    services = {entry["service"]: entry for entry in report["services"]}
    assert report["project"] == stack.project and report["healthy"] is True
    assert set(services) == {"broker", "postgres", "relay", "consumer", "migrate"}
    assert services["migrate"] == {
        "service": "migrate",
        "state": "exited",
        "health": None,
        "ready_s": None,
    }
    for name in ("broker", "postgres", "relay", "consumer"):
        assert services[name]["state"] == "running", services[name]
        assert services[name]["health"] == "healthy", services[name]
        assert 0 < services[name]["ready_s"] <= report["seconds"], (services[name], report)
    assert report["stale_volumes"] == []
    assert "error" not in result.err
    consumer = stack.client.containers.get(f"{stack.project}-consumer-1")
    assert consumer.attrs["RestartCount"] == 1  # it did fail once, and up waited it out

    down = stack.edaenv("down", "--volumes", "--json")
    assert down.code == 0, down.text
    assert json.loads(down.out) == {
        "project": stack.project,
        "containers_removed": 5,
        "volumes_deleted": 2,  # postgres-data, nats-data
        "images_removed": [],
    }
    assert stack.containers() == [] and stack.volumes() == []


def test_up_says_which_image_it_pulls_and_json_errors_stay_off_stdout(
    make_stack: MakeStack,
) -> None:
    """Nothing said which image was missing before compose's raw pull error; with --json an
    error must leave stdout empty (a script parses it) and keep its exit code."""
    import yaml

    stack = make_stack("nats", ("postgres",))
    config = stack.root / "edaenv.yaml"
    data = yaml.safe_load(config.read_text())
    data["images"]["postgres"] = "mirror.invalid/edaenv-test/postgres:18"
    config.write_text(yaml.safe_dump(data))
    result = stack.edaenv("up", "--json", "--timeout", "60")
    assert (result.code, result.out) == (1, ""), result.text
    assert result.seconds < 45, result.seconds
    lines = result.err.splitlines()
    assert "pulling mirror.invalid/edaenv-test/postgres:18 (not on this machine yet) ..." in lines
    assert lines.index("starting ...") > lines.index(
        "pulling mirror.invalid/edaenv-test/postgres:18 (not on this machine yet) ..."
    )
    image = "mirror.invalid/edaenv-test/postgres:18"
    error = result.err.split("error: ", 1)[1].splitlines()
    # The image is the cause; the broker, whose image is here, only followed from it.
    assert error[0] == (
        f"up failed: postgres image {image} is not here and could not be pulled; "
        "broker not created: compose stopped at the image it could not pull"
    ), result.err
    assert error[2].startswith("  compose said: ") and "mirror.invalid" in error[2], error
    assert "`images: {postgres: mirror.example.com/postgres:18}`" in result.err
    assert "docker load" in result.err and "images:" in result.err
    assert "timeout" not in result.err and "within" not in result.err
    assert not any("pulling" in line and "nats" in line for line in lines)  # present: no pull


def test_logs_of_a_stack_never_started_names_the_project(make_stack: MakeStack) -> None:
    """Without a rendered compose file (never rendered, or deleted) it complained about that
    file, exit 2, when what matters is that the stack has no container."""
    stack = make_stack("nats", ())
    (stack.scaffold / "compose.yaml").unlink()
    for args, what in (((), "stack"), (("broker",), "service 'broker' of stack")):
        result = stack.edaenv("logs", *args)
        assert (result.code, result.out, result.err) == (
            1,
            "",
            f"error: {what} '{stack.project}' has no container, so no logs\n"
            "  hint: start it with `edaenv up`; `edaenv status` shows what runs\n",
        )


def test_a_failed_service_of_the_users_override_is_named_with_its_log(
    make_stack: MakeStack, stack_images: dict[str, str]
) -> None:
    """A service edaenv does not know (the user's compose.override.yaml) that exited 1 stopped
    `up`, and the report named only edaenv's own services, still starting."""
    stack = make_stack("nats", ())
    stack.override(
        "services:\n"
        "  migrate:\n"
        f"    image: {stack_images.get('python', 'python:3.12-slim')}\n"
        '    command: ["python3", "-c", "print(\'migration failed\'); raise SystemExit(1)"]\n'
    )
    result = stack.edaenv("up", "--timeout", "120")
    assert result.code == 1, result.text
    assert result.seconds < 60, result.seconds
    error = result.err.split("error: ", 1)[1]
    assert error.splitlines()[0].startswith("up failed: migrate exited with code 1"), error
    assert "    | migration failed\n" in error
    assert "within" not in error and "--timeout" not in error
