"""The default images: one data file (compose-fragments/compose.images.yaml) that Renovate and
Dependabot read as a compose file, the single source the renderer takes them from."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.config import (
    BROKERS,
    IMAGE_KEYS,
    default_images,
    image_roles,
    parse_config,
    read_images,
)
from edaenv.errors import ConfigError
from edaenv.names import check_image
from edaenv.stack.render import postgres_data_dir, render_committed
from tests.conftest import REPO

FILE = REPO / "compose-fragments" / "compose.images.yaml"


def listed() -> dict[str, str]:
    return {
        role: spec["image"] for role, spec in yaml.safe_load(FILE.read_text())["services"].items()
    }


@pytest.mark.parametrize("broker", BROKERS)
def test_every_rendered_default_image_is_the_files(broker: str) -> None:
    config = parse_config(f"project: shop\nbroker: {broker}\n", Path("/r/edaenv.yaml"))
    compose = yaml.safe_load(next(iter(render_committed(config).values())))
    images = listed()
    for service, spec in compose["services"].items():
        if service in ("relay", "consumer"):  # built from `python`
            assert spec["build"]["args"]["PYTHON_IMAGE"] == images["python"]
        else:
            role = f"broker-{broker}" if service == "broker" else service
            assert spec["image"] == images[role]


def test_no_image_is_written_anywhere_else_in_the_package() -> None:
    sources = {p: p.read_text() for p in (REPO / "edaenv").rglob("*.py")}
    for image in listed().values():
        literal = re.compile(rf"[\"']{re.escape(image)}[\"']")  # a string, not part of a hint
        written = [str(p.relative_to(REPO)) for p, text in sources.items() if literal.search(text)]
        assert written == [], f"{image} is also written in {written}"
    assert set(default_images()) == {
        *(f"broker-{b}" for b in BROKERS),
        *(k for k in IMAGE_KEYS if k != "broker"),
    }


# A valid file in the shipped file's layout, with pins of its own: the cases below stay valid
# whatever Renovate bumps in the real one.
VALID = """# line 1
# line 2
# line 3
services:
  broker-kafka:
    image: apache/kafka:4.1.0
  broker-redpanda:
    image: redpandadata/redpanda:v25.2.10
  broker-rabbitmq:
    image: rabbitmq:4.1-management
  broker-nats:
    image: nats:2.11-alpine
  postgres:
    image: postgres:18
  jaeger:
    image: cr.jaegertracing.io/jaegertracing/jaeger:2.9.0
  prometheus:
    image: prom/prometheus:v3.5.0
  grafana:
    image: grafana/grafana:12.1.1
  python:
    image: python:3.12-slim
"""
HINT = "hint: this file ships with edaenv: reinstall edaenv (in a checkout: fix the file)"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("services: [\n", 2, "not valid YAML: expected the node content, but found '<stream end>'"),
        ("- postgres:18\n", 1, "the file must be a mapping"),
        ("name: images\n", 1, "no `services:` mapping"),
        ("services:\n- postgres\n", 2, "`services` must be a mapping"),
        (VALID.replace("  postgres:\n    image: postgres:18\n", ""), 4, "no image for postgres"),
        (
            VALID.replace("image: postgres:18", "image: 18"),
            14,
            "the image of postgres must be a string",
        ),
        (
            VALID.replace("image: postgres:18", "image:"),
            14,
            "the image of postgres must be a string",
        ),
        (
            VALID.replace("image: postgres:18", "image: Postgres:18"),
            14,
            "postgres: 'Postgres:18' is not an image reference",
        ),
        (VALID.replace("    image: postgres:18\n", "    tag: '18'\n"), 13, "no image for postgres"),
        (
            VALID.replace("  postgres:\n", "  postgress:\n"),
            13,
            "unknown role 'postgress'; roles: " + ", ".join(image_roles()),
        ),
        (VALID + "  jaeger:\n    image: jaeger:2\n", 23, "role 'jaeger' is listed twice"),
        (
            VALID.replace(
                "  python:\n    image: python:3.12-slim\n", "  python: python:3.12-slim\n"
            ),
            21,
            "`python` must be a mapping",
        ),
    ],
)
def test_a_broken_images_file_says_what_and_where(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "compose.images.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_images(path)
    assert (caught.value.where, caught.value.message) == (f"{path}:{line}", message)
    assert f"hint: {caught.value.hint}" == HINT


def test_a_missing_or_undecodable_images_file_is_said_plainly(tmp_path: Path) -> None:
    path = tmp_path / "compose.images.yaml"
    with pytest.raises(ConfigError, match="cannot read the default images: No such file"):
        read_images(path)
    path.write_bytes(b"services:\n  postgres: {image: \xff}\n")
    with pytest.raises(ConfigError, match="not UTF-8 text: byte at offset 30"):
        read_images(path)


IMAGE = st.from_regex(
    r"([a-z0-9]{1,8}\.example:5000/)?[a-z0-9]{1,10}(/[a-z0-9]{1,10})?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,8})?",
    fullmatch=True,
)


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries({role: IMAGE for role in image_roles()}), st.permutations(image_roles())
)
def test_any_valid_file_reads_back_as_written(images: dict[str, str], order: list[str]) -> None:
    text = yaml.safe_dump({"services": {role: {"image": images[role]} for role in order}})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "compose.images.yaml"
        path.write_text(text)
        assert read_images(path) == images


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.text(max_size=200), st.sampled_from(VALID.splitlines(keepends=True)).map(str)),
    st.integers(0, len(VALID)),
)
@example("services: {postgres: {image: [a]}}", 0)
@example("services: {? [a]: {image: x}}", 0)
@example("services: !!binary aGk=", 0)
def test_any_edit_gives_the_images_or_a_config_error(junk: str, at: int) -> None:
    """Text spliced anywhere into the file: either a complete, valid map or a ConfigError,
    never another exception."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "compose.images.yaml"
        path.write_text(VALID[:at] + junk + VALID[at:])
        try:
            images = read_images(path)
        except ConfigError as exc:
            assert exc.where and exc.where.startswith(str(path))
        else:
            assert list(images) == list(image_roles())
            for image in images.values():
                check_image(image, where=None)


def test_renovate_and_dependabot_pick_up_the_file_by_its_name() -> None:
    """Their docker-compose managers' own file patterns (Renovate's managerFilePatterns,
    Dependabot's FILENAME_REGEX), as their docs and source give them."""
    renovate = re.compile(r"(^|/)(?:docker-)?compose[^/]*\.ya?ml$")
    dependabot = re.compile(r"(docker-)?compose(?>\.[\w-]+)?\.ya?ml", re.IGNORECASE)
    relative = str(FILE.relative_to(REPO))
    assert renovate.search(relative) and dependabot.fullmatch(FILE.name)
    # What the patterns refuse, so the check above can fail: a name without `compose`.
    assert not renovate.search("compose-fragments/images.yaml")
    assert not dependabot.fullmatch("images.yaml")
    updates = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())["updates"]
    assert {
        "package-ecosystem": "docker-compose",
        "directory": "/" + str(FILE.parent.relative_to(REPO)),
    } in [{k: u[k] for k in ("package-ecosystem", "directory")} for u in updates]


@pytest.mark.parametrize(
    ("image", "mount"),
    [
        ("postgres:18", "/var/lib/postgresql"),
        ("postgres:18.1-alpine", "/var/lib/postgresql"),
        ("postgres", "/var/lib/postgresql"),
        ("postgres@sha256:" + "a" * 64, "/var/lib/postgresql"),
        ("postgres:17", "/var/lib/postgresql/data"),
        ("mirror.example.com:5000/library/postgres:16-bookworm", "/var/lib/postgresql/data"),
        ("postgres:9.6", "/var/lib/postgresql/data"),
        ("postgres:latest", "/var/lib/postgresql"),
    ],
)
def test_the_postgres_volume_follows_the_images_data_layout(image: str, mount: str) -> None:
    assert postgres_data_dir(image) == mount


@given(st.integers(1, 40), st.sampled_from(["", "-alpine", ".3", ".3-bookworm"]))
def test_any_major_version_gets_its_layout(major: int, suffix: str) -> None:
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert postgres_data_dir(f"registry:5000/postgres:{major}{suffix}") == expected


def test_the_docs_list_the_files_images() -> None:
    docs = (REPO / "docs" / "stack.md").read_text()
    for role, image in listed().items():
        assert f"| `{role}` | `{image}` |" in docs
