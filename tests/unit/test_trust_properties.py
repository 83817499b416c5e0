"""Generated inputs against the promises of edaenv.yaml, the CI isolation variables and .env:
every input is either refused with a located message (exit 2) or rendered into a compose file
with exactly the stack's services, ports and volumes, and nothing privileged."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edaenv.config import (
    BROKERS,
    COMPONENTS,
    IMAGE_KEYS,
    TOP_KEYS,
    Config,
    environment_overrides,
    parse_config,
)
from edaenv.errors import UsageError
from edaenv.stack.dotenv import GENERATED, env_text, fresh_secrets, read_env
from edaenv.stack.render import render_committed

ROOT = Path("/repo")
SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values of every kind YAML can hold, and strings near the grammar of each key.
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True) | st.text(max_size=25)
images = st.from_regex(
    r"([a-z0-9.-]+(:[0-9]{1,5})?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_.-]{1,20})?",
    fullmatch=True,
) | st.text(max_size=40)
ports = st.integers(-5, 70000) | junk
documents = st.fixed_dictionaries(
    {},
    optional={
        "version": st.just(1) | junk,
        "project": names | junk,
        "broker": st.sampled_from(BROKERS) | junk,
        "components": st.dictionaries(st.sampled_from(COMPONENTS), st.booleans(), max_size=6)
        | junk,
        "ports": st.dictionaries(
            st.sampled_from(["offset", "broker", "postgres", "grafana", "relay", "nosuch"]),
            ports
            | st.dictionaries(st.sampled_from(["kafka", "client", "http", "x"]), ports, max_size=2),
            max_size=3,
        )
        | junk,
        "images": st.dictionaries(
            st.sampled_from([*IMAGE_KEYS, "nosuch"]), images | junk, max_size=3
        )
        | junk,
        "scaffold": names | st.sampled_from(["../up", "/abs", "a/b", "eda\ninclude: x", ".git"]),
        "extra": junk,
    },
)
environments = st.fixed_dictionaries(
    {},
    optional={
        "EDAENV_PROJECT": names,
        "EDAENV_PORT_OFFSET": st.from_regex(r"[0-9]{1,6}", fullmatch=True) | st.text(max_size=6),
    },
)


def check_rendered(config: Config) -> None:
    """The compose file has exactly the stack's services, its ports on 127.0.0.1, its own
    volumes, and no privilege, host namespace or host path."""
    [text] = render_committed(config).values()
    compose = yaml.safe_load(text)
    assert set(compose) <= {"name", "services", "volumes"}
    assert compose["name"] == config.project
    services: dict[str, Any] = compose["services"]
    assert list(services) == config.services()
    expected_ports = sorted(p for named in config.ports().values() for p in named.values())
    published = []
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert not {"privileged", "network_mode", "cap_add", "pid", "ipc", "devices"} & set(service)
        assert set(service.get("networks") or ["default"]) == {"default"}
        if name not in ("relay", "consumer"):
            assert service["image"] == config.image(name)
        for port in service.get("ports", []):
            host, host_port, _ = str(port).split(":")
            assert host == "127.0.0.1"
            published.append(int(host_port))
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert source in declared or (source.startswith("./") and ".." not in source), volume
    assert sorted(published) == expected_ports


@SETTINGS
@given(documents, environments)
@example({"project": "shop", "images": {"broker": "0"}}, {})  # once came back as the integer 0
@example({"project": "shop", "scaffold": "eda\ninclude: x"}, {})
@example({"project": "shop"}, {"EDAENV_PORT_OFFSET": "²"})
@example({"project": "shop"}, {"EDAENV_PROJECT": "x\n"})
@example({"project": "shop", "ports": {"offset": 65000}}, {})
def test_any_config_and_environment_is_refused_located_or_renders_safely(
    document: dict[str, Any], environ: dict[str, str]
) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        config = parse_config(text, ROOT / "edaenv.yaml", display="edaenv.yaml")
        config = environment_overrides(config, environ)
    except UsageError as exc:  # exit 2, located
        assert exc.where, exc
        assert re.fullmatch(r"edaenv\.yaml:\d+|EDAENV_PROJECT|EDAENV_PORT_OFFSET", exc.where)
        return
    assert set(document) <= set(TOP_KEYS)
    check_rendered(config)


@SETTINGS
@given(st.text(max_size=200))
@example("project: shop\nbroker: [kafka\n")
@example("project: shop\n\tbroker: kafka\n")
@example("- a\n- b\n")
def test_any_text_is_refused_located_or_renders_safely(text: str) -> None:
    try:
        config = parse_config(text, ROOT / "edaenv.yaml", display="edaenv.yaml")
    except UsageError as exc:
        assert exc.where and re.fullmatch(r"edaenv\.yaml(:\d+)?", exc.where), exc
        return
    check_rendered(config)


VALID = (
    "version: 1\nproject: shop\nbroker: rabbitmq\ncomponents:\n  grafana: false\n"
    "ports:\n  offset: 100\nimages:\n  postgres: postgres:17\nscaffold: eda\n"
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, VALID.count("\n") - 1))
def test_a_key_that_lost_its_colon_is_reported_on_its_own_line(number: int) -> None:
    lines = VALID.splitlines()
    lines[number] = lines[number].replace(":", "", 1)
    with pytest.raises(UsageError) as caught:
        parse_config("\n".join(lines) + "\n", ROOT / "edaenv.yaml", display="edaenv.yaml")
    assert caught.value.where == f"edaenv.yaml:{number + 1}", caught.value


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# Any text one .env line can hold (a line ends at "\n"; a "\r" before it is dropped).
@given(
    st.sampled_from(GENERATED),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30),
)
@example("NATS_PASSWORD", "a$b")
@example("POSTGRES_PASSWORD", "p@ss/word#1")
def test_any_env_value_is_refused_located_or_reaches_the_urls_exactly(
    tmp_path: Path, key: str, value: str
) -> None:
    from edaenv.stack.endpoints import environment

    secrets = {**fresh_secrets(), key: value}
    path = tmp_path / ".env"
    path.write_text(env_text(secrets), encoding="utf-8")
    try:
        read = read_env(path)
    except UsageError as exc:
        assert exc.where and exc.where.startswith(f"{path}:"), exc
        return
    assert read[key] == value.strip().strip("'\"") or read[key] == value
    for broker in ("rabbitmq", "nats"):
        config = parse_config(f"project: shop\nbroker: {broker}\n", tmp_path / "edaenv.yaml")
        url = urlsplit(environment(config, read)["EDAENV_BROKER_URL"])
        user_key = "RABBITMQ" if broker == "rabbitmq" else "NATS"
        assert unquote(url.username or "") == read[f"{user_key}_USER"]
        assert unquote(url.password or "") == read[f"{user_key}_PASSWORD"]


def test_a_key_missing_from_env_is_a_located_error(project: Path) -> None:
    from tests.conftest import run_edaenv

    assert run_edaenv("init", "--defaults", "--broker", "nats", cwd=project).code == 0
    env_file = project / "eda" / ".env"
    env_file.write_text(
        "".join(
            line + "\n" for line in env_file.read_text().splitlines() if "NATS_USER" not in line
        )
    )
    result = run_edaenv("env", cwd=project)
    assert (result.code, result.err) == (
        2,
        f"error: {env_file}: NATS_USER is missing\n"
        "  hint: add a line `NATS_USER=...` (letters, digits and - . _ ~), or move the file "
        "aside and run `edaenv init --force` for fresh secrets\n",
    )
