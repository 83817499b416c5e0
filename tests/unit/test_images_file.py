"""The default images: one data file (compose-fragments/compose.images.yaml) that Renovate and
Dependabot read as a compose file, the single source the renderer takes them from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import edaenv.resources
from edaenv.config import BROKERS, IMAGE_KEYS, default_images, parse_config
from edaenv.errors import ConfigError
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


def test_a_broken_images_file_is_said_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "compose.images.yaml").write_text("services:\n  postgres: {image: postgres:18}\n")
    monkeypatch.setattr(edaenv.resources, "fragments_dir", lambda: tmp_path)
    default_images.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"no image for broker-kafka, broker-nats"):
            default_images()
    finally:
        default_images.cache_clear()


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
