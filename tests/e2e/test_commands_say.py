"""Commands say what actually happened (issue: every command says what actually happened)."""

from __future__ import annotations

from tests.e2e.conftest import MakeStack


def test_logs_of_a_stack_that_is_not_up_says_so(make_stack: MakeStack) -> None:
    """It printed nothing and exited 0, as if the services had nothing to say."""
    stack = make_stack("nats", ())
    assert stack.edaenv("render").code == 0
    result = stack.edaenv("logs")
    assert (result.code, result.out, result.err) == (
        1,
        "",
        f"error: stack '{stack.project}' has no container, so no logs\n"
        "  hint: start it with `edaenv up`; `edaenv status` shows what runs\n",
    )
    stack.up("--timeout", "120")
    assert stack.edaenv("logs", "--tail", "5").code == 0
    # Idle health checks: start_interval where the engine takes it (Engine API 1.44), the
    # sleeping gate before.
    api = tuple(int(p) for p in stack.client.version()["ApiVersion"].split("."))
    override = (stack.scaffold / ".generated" / "compose.engine.yaml").read_text()
    assert ("start_interval" in override) == (api >= (1, 44))
    assert ("/dev/shm/.edaenv-healthy" in override) == (api < (1, 44))


def test_down_rmi_removes_the_images_up_built_and_no_other(
    make_stack: MakeStack, stack_images: dict[str, str]
) -> None:
    """`down` left the built relay/consumer images behind, one pair per project, for good."""
    import json

    stack = make_stack("nats", ("postgres", "outbox"))
    stack.up("--timeout", "180", timeout=600)
    built = f"{stack.project}-relay:dev"
    assert stack.client.images.list(name=built)
    result = stack.edaenv("down", "--rmi", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out) == {
        "project": stack.project,
        "containers_removed": 3,
        "volumes_deleted": None,
        "images_removed": [built],
    }
    assert not stack.client.images.list(name=built)
    for image in stack_images.values():  # the pulled (here: stand-in) images stay
        assert stack.client.images.get(image)


def test_up_stops_at_once_on_an_image_that_cannot_start(
    make_stack: MakeStack, stack_images: dict[str, str]
) -> None:
    """It was reported as "did not become healthy within 60s ... a slow machine may need
    --timeout 120" after waiting: the broker image here has no entrypoint for NATS's flags."""
    import yaml

    stack = make_stack("nats", ("postgres", "outbox"))
    config = stack.root / "edaenv.yaml"
    data = yaml.safe_load(config.read_text())
    data["images"]["broker"] = stack_images.get("python", "python:3.12-slim")
    config.write_text(yaml.safe_dump(data))
    result = stack.edaenv("up", "--timeout", "120")
    assert result.code == 1, result.text
    assert result.seconds < 60, result.seconds
    first = result.err.split("error: ", 1)[1].splitlines()[0]
    assert first.startswith("up failed: broker failed to start: "), first
    assert "does the image fit this service?" in first
    # The relay needs the broker healthy (compose's depends_on label on its container).
    assert "relay not started: it waits for broker, which failed" in first, first
    assert "within" not in result.err and "--timeout" not in result.err


def test_up_names_every_failed_service_with_its_cause(make_stack: MakeStack) -> None:
    """A consumer that exited made `up` wait the full timeout, and the relay, also unhealthy,
    was not named."""
    stack = make_stack("nats", ("postgres", "outbox", "consumer"))
    stack.override(
        "services:\n"
        "  consumer:\n"
        # Exits a moment after the relay, started beside it, runs (its check failing, still
        # within its retries): both are named.
        '    command: ["python3", "-c", "import sys, time; time.sleep(3); print(\'giving up\'); '
        'sys.exit(3)"]\n'
        "  relay:\n"
        "    healthcheck:\n"
        '      test: ["CMD", "false"]\n'
        "      interval: 1s\n"
        "      retries: 60\n"
        "      start_period: 0s\n"
    )
    result = stack.edaenv("up", "--timeout", "300", timeout=600)
    assert result.code == 1, result.text
    assert result.seconds < 150, result.seconds  # not the 300 s timeout
    first = result.err.split("error: ", 1)[1].splitlines()[0]
    assert "consumer exited with code 3" in first, result.err
    # On a loaded machine compose may not have started the relay yet when the consumer exits.
    relay = ("relay still starting", "relay not started: `up` stopped at the first failure")
    assert any(said in first for said in relay), first
    assert "    | giving up" in result.err  # the consumer's last log line
    assert "within" not in first


def test_up_names_an_image_it_cannot_pull_and_how_to_get_it(make_stack: MakeStack) -> None:
    import yaml

    stack = make_stack("nats", ())
    config = stack.root / "edaenv.yaml"
    data = yaml.safe_load(config.read_text())
    data["images"]["broker"] = "edaenv-test-missing/broker:0"
    config.write_text(yaml.safe_dump(data))
    result = stack.edaenv("up", "--timeout", "60")
    assert result.code == 1, result.text
    assert result.err.startswith("starting ...\n") or "starting ..." in result.err
    assert (
        "error: up failed: broker image edaenv-test-missing/broker:0 is not here and could "
        "not be pulled\n" in result.err
    ), result.err
    assert "docker load" in result.err and "images:" in result.err
