"""The grammar of every name a user gives edaenv, defined once.

Config, `init`, `ci prepare`, contracts and environment variables check names here, so a value
that reaches a compose file, a JSON document, Python source, SQL or a path is known to be
harmless there. Each check raises UsageError saying what is wrong, where and how to fix it.
"""

from __future__ import annotations

import re

from edaenv.errors import UsageError

# Compose project names: what `docker compose -p` accepts.
PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Topics must be valid on every broker at once: a Kafka topic ([A-Za-z0-9._-], at most 249), a
# NATS subject (dot-separated tokens, none empty, no wildcards or spaces) and a RabbitMQ
# exchange. No '/', so a topic is also safe as a file name.
TOPIC = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
TOPIC_MAX = 200
# The team owning a contract: a label, shown and written into JSON, never code.
OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@/-]{0,99}")
# A path inside the repository: plain directory names, no '..', no control characters.
SCAFFOLD_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")

# Image references, after the Docker reference grammar (distribution/reference).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
IMAGE_NAME_MAX = 255
# What a message may echo of a rejected value: enough to find it, never megabytes.
SHOWN_MAX = 60


def shown(value: object) -> str:
    """A user's value as a message quotes it: repr (control characters visible), cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_MAX else f"{text[: SHOWN_MAX - 5]}...{text[-1]}"


def safe_project_name(name: str) -> str:
    """A directory name made safe for a compose project name."""
    safe = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:63].strip("-_")
    return safe or "edaenv"


def check_project(value: str, where: str | None) -> str:
    if not isinstance(value, str) or not PROJECT.fullmatch(value):
        raise UsageError(
            f"{shown(str(value))} cannot be a compose project name",
            where=where,
            hint="use lowercase letters, digits, '-' and '_' (at most 63), starting with a "
            f"letter or digit, e.g. '{safe_project_name(str(value))}'",
        )
    return value


def check_topic(value: str, where: str | None) -> str:
    if not isinstance(value, str) or len(value) > TOPIC_MAX or not TOPIC.fullmatch(value):
        raise UsageError(
            f"{shown(str(value))} cannot be a topic",
            where=where,
            hint="use letters, digits, '_' and '-', in parts joined by single dots "
            f"(at most {TOPIC_MAX} characters), e.g. 'orders' or 'shop.orders'",
        )
    return value


def check_owner(value: str, where: str | None) -> str:
    if not isinstance(value, str) or not OWNER.fullmatch(value):
        raise UsageError(
            f"{shown(str(value))} cannot be an owner",
            where=where,
            hint="name the team with letters, digits, spaces and . _ @ / - "
            "(at most 100, starting with a letter or digit), e.g. 'orders-team'",
        )
    return value


def check_image(value: str, where: str | None) -> str:
    match = IMAGE.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match.group("name")) > IMAGE_NAME_MAX:
        raise UsageError(
            f"{shown(str(value))} is not an image reference",
            where=where,
            hint="write [registry[:port]/]name[:tag][@sha256:digest] in lowercase, "
            "e.g. 'mirror.example.com/library/postgres:18'",
        )
    return value


def check_scaffold(value: str, where: str | None) -> str:
    parts = value.split("/") if isinstance(value, str) else []
    if not parts or not all(SCAFFOLD_PART.fullmatch(part) for part in parts):
        raise UsageError(
            f"{shown(str(value))} cannot be the scaffold directory",
            where=where,
            hint="a relative path inside the repository made of plain names "
            "(letters, digits, . _ -; no '..'), e.g. 'eda'",
        )
    if any(part in (".", "..") for part in parts):
        raise UsageError(
            f"'scaffold' must stay inside the repository: {shown(value)}",
            where=where,
            hint="use a relative path without '..', e.g. `scaffold: eda`",
        )
    return value


def parse_port_offset(text: str, where: str | None, *, highest_port: int | None = None) -> int:
    """A port offset from a flag or a variable: ASCII digits only (str.isdigit() would take
    '²'), and small enough that highest_port + offset stays a port."""
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,5}", text):
        raise UsageError(
            f"{shown(text)} is not a port offset",
            where=where,
            hint="a number such as 100, or `auto` where the command takes it",
        )
    offset = int(text)
    top = (highest_port or 0) + offset
    if top > 65535:
        raise UsageError(
            f"port offset {offset} puts a port at {top}, above 65535",
            where=where,
            hint=f"use an offset of at most {65535 - (highest_port or 0)}",
        )
    return offset


def escape_compose(value: str) -> str:
    """A literal value for a compose file: '$' would start a variable that compose fills from
    the host's environment."""
    return value.replace("$", "$$")
