"""Values in edaenv.yaml cannot add structure to the rendered compose file (issue: compose
injection through `images:` and `scaffold:`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edaenv.config import parse_config
from edaenv.errors import ConfigError
from tests.conftest import run_edaenv

INJECTION = (
    "alpine\n  evil:\n    image: alpine\n    privileged: true\n    network_mode: host\n"
    "    volumes: ['/:/host', '/var/run/docker.sock:/var/run/docker.sock']"
)


def config_text(image: str) -> str:
    return "version: 1\nproject: shop\nbroker: nats\nimages:\n  broker: " + yaml.safe_dump(
        image, default_style='"', width=10_000
    )


@pytest.mark.parametrize(
    "image",
    [INJECTION, "${HOME}/img", "foo: bar", "[a", "foo #c", "x\n", "Alpine:1", "a b"],
)
def test_an_image_that_is_not_a_reference_is_refused_with_its_line(image: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(image), Path("/repo/edaenv.yaml"), display="edaenv.yaml")
    assert caught.value.where == "edaenv.yaml:5"
    assert "is not an image reference" in caught.value.message
    assert len(caught.value.message) < 120  # a long value is quoted short


def test_the_injection_through_the_cli_exits_2_and_writes_nothing(project: Path) -> None:
    assert run_edaenv("init", "--defaults", "--broker", "nats", cwd=project).code == 0
    config = project / "edaenv.yaml"
    injected = config_text(INJECTION).split("\n", 3)[3]
    lines = [line for line in config.read_text().splitlines() if not line.startswith("images:")]
    config.write_text("\n".join(lines) + "\n" + injected)
    compose = (project / "eda" / "compose.yaml").read_bytes()
    result = run_edaenv("render", cwd=project)
    assert result.code == 2, result.err
    assert "is not an image reference" in result.err and "Traceback" not in result.err
    assert (project / "eda" / "compose.yaml").read_bytes() == compose


@pytest.mark.parametrize("scaffold", ["eda\ninclude: x", "eda #x", "../up", "/abs", "a/../b"])
def test_a_scaffold_path_that_is_not_plain_is_refused(scaffold: str) -> None:
    text = "version: 1\nproject: shop\nscaffold: " + yaml.safe_dump(scaffold, default_style='"')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("/repo/edaenv.yaml"), display="edaenv.yaml")
    assert caught.value.where == "edaenv.yaml:3"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=80))
@example(INJECTION)
@example("localhost:5000/a/b:1@sha256:" + "a" * 64)
def test_any_accepted_image_renders_only_the_fragments_services(tmp_path_factory, image: str):
    """Every input is refused with a located ConfigError or renders a compose file with exactly
    the stack's services, its own image, and no privileges or host networking."""
    from edaenv.stack.render import render_stack

    root = tmp_path_factory.mktemp("repo")
    (root / "eda").mkdir()
    (root / "eda" / ".env").write_text(
        "NATS_USER=app\nNATS_PASSWORD=p\nPOSTGRES_USER=app\nPOSTGRES_PASSWORD=p\n"
        "POSTGRES_DB=app\nGRAFANA_ADMIN_PASSWORD=p\n"
    )
    text = config_text(image) + "components:\n  outbox: false\n  consumer: false\n"
    try:
        config = parse_config(text, root / "edaenv.yaml", display="edaenv.yaml")
    except ConfigError as exc:
        assert exc.where and exc.where.startswith("edaenv.yaml:")
        return
    compose = yaml.safe_load(render_stack(config)["compose.yaml"])
    assert set(compose["services"]) == set(config.services())
    assert compose["services"]["broker"]["image"] == image
    for service in compose["services"].values():
        assert not {"privileged", "network_mode", "cap_add", "pid", "ipc"} & set(service)
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:")
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert not source.startswith("/"), volume


def test_a_superscript_port_offset_is_a_located_error(project: Path) -> None:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    result = run_edaenv("env", cwd=project, env={"EDAENV_PORT_OFFSET": "²"})
    assert result.code == 2 and "Traceback" not in result.err
    assert "EDAENV_PORT_OFFSET: '²' is not a port offset" in result.err


def test_ci_prepare_refuses_an_offset_past_the_last_port_up_front(project: Path) -> None:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    result = run_edaenv("ci", "prepare", "--port-offset", "99999", cwd=project)
    assert result.code == 2
    assert "error: --port-offset: port offset 99999 puts a port at" in result.err


@pytest.mark.parametrize("name", ["edaenv.yaml", "eda/.env"])
def test_a_file_that_is_not_utf8_is_a_located_error(project: Path, name: str) -> None:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    path = project / name
    path.write_bytes(path.read_bytes() + b"\n# caf\xe9\n")
    result = run_edaenv("env", cwd=project)
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert "not UTF-8 text: byte 0xe9" in result.err and name.split("/")[-1] in result.err


def test_an_alias_bomb_is_refused_at_once() -> None:
    import time

    bomb = "project: shop\nimages:\n  broker: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"x{n}: &a{n} [{', '.join(['*a' if n == 0 else f'*a{n - 1}'] * 9)}]\n" for n in range(18)
    )
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        parse_config(bomb, Path("/repo/edaenv.yaml"), display="edaenv.yaml")
    assert time.monotonic() - started < 1
    assert caught.value.where == "edaenv.yaml:3"
    assert "anchors and aliases" in caught.value.message


def test_a_key_given_twice_is_refused_with_both_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "project: shop\nbroker: kafka\nbroker: nats\n",
            Path("/repo/edaenv.yaml"),
            display="edaenv.yaml",
        )
    assert str(caught.value) == "edaenv.yaml:3: key 'broker' is given twice (lines 2 and 3)"


def test_env_exports_nothing_that_moves_another_repositorys_commands(tmp_path: Path) -> None:
    """`set -a; eval "$(edaenv env)"` in one repository, then a command in another: it acts on
    its own stack."""
    import subprocess

    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        subprocess.run(["git", "init", "-q", str(tmp_path / name)], check=True)
        assert run_edaenv("init", "--defaults", cwd=tmp_path / name).code == 0
    exported = dict(
        line.split("=", 1) for line in run_edaenv("env", cwd=tmp_path / "first").out.splitlines()
    )
    assert "EDAENV_PROJECT" not in exported
    exported = {k: v for k, v in exported.items() if not k.endswith("_URL")}
    second = run_edaenv("env", "--json", cwd=tmp_path / "second", env=exported)
    assert '"EDAENV_COMPOSE_PROJECT": "second"' in second.out
