"""edaenv.yaml: the single source of truth of a stack. Loading, validation, derived values.

Every validation error names the file, the line and the key, and says how to fix it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edaenv.errors import ConfigError, UsageError
from edaenv.names import check_image, check_project, check_scaffold, shown

if TYPE_CHECKING:
    import yaml

CONFIG_NAME = "edaenv.yaml"
BROKERS = ("kafka", "redpanda", "rabbitmq", "nats")
COMPONENTS = ("postgres", "outbox", "consumer", "jaeger", "prometheus", "grafana")
# component -> the components it cannot work without
REQUIRES: dict[str, tuple[str, ...]] = {
    "outbox": ("postgres",),
    "consumer": ("postgres",),
    "grafana": ("prometheus",),
}

BROKER_PORTS: dict[str, dict[str, int]] = {
    "kafka": {"kafka": 9092},
    "redpanda": {"kafka": 9092, "admin": 9644},
    "rabbitmq": {"amqp": 5672, "management": 15672},
    "nats": {"client": 4222, "monitor": 8222},
}
SERVICE_PORTS: dict[str, dict[str, int]] = {
    "postgres": {"postgres": 5432},
    "relay": {"metrics": 9464},
    "consumer": {"metrics": 9465},
    "jaeger": {"ui": 16686, "otlp-grpc": 4317, "otlp-http": 4318},
    "prometheus": {"http": 9090},
    "grafana": {"http": 3000},
}
# Keys an `images:` override may name: service roles, plus `python` (base of relay/consumer).
IMAGE_KEYS = ("broker", "postgres", "jaeger", "prometheus", "grafana", "python")
TOP_KEYS = ("version", "project", "broker", "components", "ports", "images", "scaffold")
ANCHORS = "YAML anchors and aliases (&name, *name) are not supported in edaenv.yaml"


@dataclass(frozen=True)
class Config:
    path: Path
    project: str
    broker: str
    components: frozenset[str]
    port_offset: int = 0
    port_overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    scaffold: str = "eda"
    # Moved to another project name or port offset by EDAENV_PROJECT / EDAENV_PORT_OFFSET (CI
    # isolation): such a run renders its own compose file, never the committed one.
    isolated: bool = False

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def scaffold_dir(self) -> Path:
        return self.root / self.scaffold

    @property
    def compose_file(self) -> Path:
        if self.isolated:
            return self.generated_dir / "compose.yaml"
        return self.scaffold_dir / "compose.yaml"

    @property
    def generated_dir(self) -> Path:
        return self.scaffold_dir / ".generated"

    @property
    def env_file(self) -> Path:
        return self.scaffold_dir / ".env"

    def has(self, component: str) -> bool:
        return component in self.components

    def services(self) -> list[str]:
        """The stack's services, in start-up order. Names are roles, the same for every broker."""
        wanted = {
            "broker": True,
            "postgres": self.has("postgres"),
            "relay": self.has("outbox"),
            "consumer": self.has("consumer"),
            "jaeger": self.has("jaeger"),
            "prometheus": self.has("prometheus"),
            "grafana": self.has("grafana"),
        }
        return [name for name, on in wanted.items() if on]

    def container_ports(self, service: str) -> dict[str, int]:
        if service == "broker":
            return dict(BROKER_PORTS[self.broker])
        return dict(SERVICE_PORTS[service])

    def ports(self) -> dict[str, dict[str, int]]:
        """Host ports, offset applied: service -> port name -> port on 127.0.0.1."""
        result: dict[str, dict[str, int]] = {}
        for service in self.services():
            ports = self.container_ports(service)
            ports.update(self.port_overrides.get(service, {}))
            result[service] = {name: port + self.port_offset for name, port in ports.items()}
        return result

    def image(self, key: str) -> str:
        """The image of a service role (or `python`), honouring overrides."""
        if key in self.images:
            return self.images[key]
        return default_images()[f"broker-{self.broker}" if key == "broker" else key]


IMAGES_FILE = "compose.images.yaml"  # in compose-fragments/
IMAGES_HINT = "this file ships with edaenv: reinstall edaenv (in a checkout: fix the file)"


@functools.cache
def default_images() -> dict[str, str]:
    """Role (`broker-<name>`, `postgres`, ..., `python`) -> image, from compose-fragments/
    compose.images.yaml: one data file that Renovate and Dependabot can update."""
    from edaenv.resources import fragments_dir

    return read_images(fragments_dir() / IMAGES_FILE)


def image_roles() -> tuple[str, ...]:
    """The roles the images file lists: one per broker, then the other services and `python`."""
    return (*(f"broker-{name}" for name in BROKERS), *(k for k in IMAGE_KEYS if k != "broker"))


def read_images(path: Path) -> dict[str, str]:
    """The images file, checked: `services: {<role>: {image: <reference>}}`, every role once.
    Packaged data, so a broken file is edaenv's bug (or a checkout's edit): said plainly, with
    the line, never a traceback."""
    import yaml

    def fail(message: str, node: yaml.Node | None = None) -> ConfigError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return ConfigError(message, where=f"{path}{line}", hint=IMAGES_HINT)

    def mapping(node: yaml.Node | None, what: str, owner: yaml.Node | None) -> list[Any]:
        if not isinstance(node, yaml.MappingNode):
            raise fail(f"{what} must be a mapping", node or owner)
        return list(node.value)

    try:
        text = path.read_bytes().decode("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise fail(f"cannot read the default images: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text: byte at offset {exc.start}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed"
        raise ConfigError(
            f"not valid YAML: {problem}", where=f"{path}{line}", hint=IMAGES_HINT
        ) from None
    services = [
        (key, value) for key, value in mapping(root, "the file", None) if key.value == "services"
    ]
    if not services:
        raise fail("no `services:` mapping", root)
    services_key, services_node = services[0]
    roles = image_roles()
    images: dict[str, str] = {}
    for key, spec in mapping(services_node, "`services`", services_key):
        role = str(key.value)
        if role not in roles:
            raise fail(f"unknown role {shown(role)}; roles: {', '.join(roles)}", key)
        if role in images:
            raise fail(f"role {shown(role)} is listed twice", key)
        image = [value for name, value in mapping(spec, f"`{role}`", key) if name.value == "image"]
        if not image:
            raise fail(f"no image for {role}", key)
        value = image[0]
        if not (isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:str"):
            raise fail(f"the image of {role} must be a string", value)
        try:
            images[role] = check_image(value.value, where=None)
        except UsageError as exc:
            raise fail(f"{role}: {exc.message}", value) from None
    missing = [role for role in roles if role not in images]
    if missing:
        raise fail(f"no image for {', '.join(missing)}", services_key)
    return {role: images[role] for role in roles}


def find_config(start: Path | None = None) -> Path:
    """edaenv.yaml in this directory or the nearest parent, like git finds .git."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any parent directory",
        hint="run `edaenv init` in your repository, or pass --config PATH",
    )


def load_config(path: Path | None = None, *, isolation: bool = True) -> Config:
    """edaenv.yaml, moved by the CI isolation variables unless `isolation` is off (what the
    committed files are rendered from)."""
    path = find_config() if path is None else path
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", hint="check --config, or run `edaenv init`")
    text = read_utf8(path, where=_display(path), hint="save the file as UTF-8")
    config = parse_config(text, path.resolve(), display=_display(path))
    return environment_overrides(config, os.environ) if isolation else config


def read_utf8(path: Path, *, where: str, hint: str) -> str:
    """A file the user edits, as text; bytes that are not UTF-8 are a located error."""
    return decode_utf8(path.read_bytes(), where=where, hint=hint)


def decode_utf8(raw: bytes, *, where: str, hint: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"not UTF-8 text: byte {raw[exc.start]:#04x} at offset {exc.start}",
            where=where,
            hint=hint,
        ) from None


def environment_overrides(config: Config, environ: Mapping[str, str]) -> Config:
    """CI isolation (`edaenv ci prepare` sets these): EDAENV_PROJECT and EDAENV_PORT_OFFSET
    replace the project name and the port offset of edaenv.yaml."""
    project = environ.get("EDAENV_PROJECT") or config.project
    offset = environ.get("EDAENV_PORT_OFFSET", "").strip()
    if project == config.project and not offset:
        return config
    check_project_name(project, where="EDAENV_PROJECT")
    # ASCII digits only: str.isdigit() takes '²', which int() then refuses.
    if offset and not re.fullmatch(r"[0-9]{1,5}", offset):
        raise ConfigError(
            f"'{offset}' is not a port offset",
            where="EDAENV_PORT_OFFSET",
            hint="a number such as 100; `edaenv ci prepare --port-offset auto` picks a free one",
        )
    changed = replace(
        config,
        project=project,
        port_offset=int(offset) if offset else config.port_offset,
        isolated=True,
    )
    highest = max(port for ports in changed.ports().values() for port in ports.values())
    if highest > 65535:
        raise ConfigError(
            f"port offset {changed.port_offset} puts a port at {highest}, above 65535",
            where="EDAENV_PORT_OFFSET",
            hint="use a smaller offset",
        )
    return changed


def parse_config(text: str, path: Path, display: str | None = None) -> Config:
    return _Validator(text, path, display or path.name).config()


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def check_project_name(project: str, where: str) -> None:
    """The project grammar of edaenv/names.py, as a config error."""
    try:
        check_project(project, where=where or None)
    except UsageError as exc:
        raise ConfigError(exc.message, where=exc.where, hint=exc.hint) from None


class _Validator:
    def __init__(self, text: str, path: Path, display: str):
        # Imported in the functions that read: `edaenv --help` loads config.py, never the YAML.
        from edaenv.located import parse

        self.path = path
        document = parse(text, display, anchors=ANCHORS)
        self.data: Any = document.data
        self.fail = document.fail

    def mapping(self, value: Any, at: tuple[str, ...], allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(
                at,
                f"'{_key(at)}' must be a mapping, got {_kind(value)}",
                hint=f"write it as `key: value` lines; allowed keys: {', '.join(allowed)}",
            )
        for key in value:
            if str(key) not in allowed:
                from edaenv.located import did_you_mean

                where = "the top level" if not at else f"'{_key(at)}'"
                raise self.fail(
                    (*at, str(key)),
                    f"unknown key '{key}' in {where}",
                    hint=f"{did_you_mean(str(key), allowed)}allowed keys: {', '.join(allowed)}",
                )
        return {str(k): v for k, v in value.items()}

    def integer(self, value: Any, at: tuple[str, ...], hint: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(at, f"'{_key(at)}' must be an integer, got {_kind(value)}", hint=hint)
        return value

    def string(self, value: Any, at: tuple[str, ...], hint: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(
                at, f"'{_key(at)}' must be a non-empty string, got {_kind(value)}", hint=hint
            )
        return value

    def config(self) -> Config:
        top = self.mapping(self.data, (), TOP_KEYS)
        version = top.get("version", 1)
        if version != 1:
            raise self.fail(
                ("version",),
                f"unsupported config version {version!r}",
                hint="this edaenv reads `version: 1`; upgrade edaenv for newer files",
            )

        project = self.string(
            top.get("project"),
            ("project",),
            hint="set `project: <name>` (lowercase letters, digits, - and _)",
        )
        try:
            check_project_name(project, where="")
        except ConfigError as exc:
            raise self.fail(("project",), exc.message, hint=exc.hint or "") from None

        broker = self.string(
            top.get("broker", "kafka"), ("broker",), hint=f"use one of: {', '.join(BROKERS)}"
        )
        if broker not in BROKERS:
            raise self.fail(
                ("broker",), f"unknown broker '{broker}'", hint=f"use one of: {', '.join(BROKERS)}"
            )

        components = self._components(top.get("components"))
        offset, overrides = self._ports(top.get("ports"), broker)
        images = self._images(top.get("images"))
        scaffold = self.string(
            top.get("scaffold", "eda"),
            ("scaffold",),
            hint="a directory relative to edaenv.yaml, e.g. `scaffold: eda`",
        )
        try:
            check_scaffold(scaffold, where=None)
        except UsageError as exc:
            raise self.fail(("scaffold",), exc.message, hint=exc.hint or "") from None
        if Path(scaffold).is_absolute() or ".." in Path(scaffold).parts:
            raise self.fail(
                ("scaffold",),
                f"'scaffold' must stay inside the repository: {scaffold}",
                hint="use a relative path without '..', e.g. `scaffold: eda`",
            )

        config = Config(
            path=self.path,
            project=project,
            broker=broker,
            components=components,
            port_offset=offset,
            port_overrides=overrides,
            images=images,
            scaffold=scaffold,
        )
        self._check_ports(config)
        return config

    def _components(self, value: Any) -> frozenset[str]:
        at = ("components",)
        raw = self.mapping(value, at, COMPONENTS) if value is not None else {}
        on = set(COMPONENTS)
        for name, enabled in raw.items():
            if not isinstance(enabled, bool):
                raise self.fail(
                    (*at, name),
                    f"'components.{name}' must be true or false, got {_kind(enabled)}",
                    hint=f"write `{name}: true` or `{name}: false`",
                )
            if not enabled:
                on.discard(name)
        for name in COMPONENTS:
            missing = [need for need in REQUIRES.get(name, ()) if need not in on]
            if name in on and missing:
                raise self.fail(
                    (*at, name) if name in raw else (*at, missing[0]),
                    f"component '{name}' needs '{missing[0]}', which is off",
                    hint=f"turn on `{missing[0]}: true` or turn off `{name}: false`",
                )
        return frozenset(on)

    def _ports(self, value: Any, broker: str) -> tuple[int, dict[str, dict[str, int]]]:
        at = ("ports",)
        known = {
            "broker": list(BROKER_PORTS[broker]),
            **{s: list(p) for s, p in SERVICE_PORTS.items()},
        }
        raw = self.mapping(value, at, ("offset", *known))
        offset = self.integer(
            raw.get("offset", 0),
            (*at, "offset"),
            hint="write e.g. `offset: 100` to move every port up by 100",
        )
        overrides: dict[str, dict[str, int]] = {}
        for service, names in known.items():
            if service not in raw:
                continue
            spec = raw[service]
            if isinstance(spec, int) and not isinstance(spec, bool):
                spec = {names[0]: spec}  # a bare number sets the service's main port
            spec = self.mapping(spec, (*at, service), tuple(names))
            overrides[service] = {
                name: self.integer(port, (*at, service, name), hint="a port number, e.g. 5433")
                for name, port in spec.items()
            }
        return offset, overrides

    def _images(self, value: Any) -> dict[str, str]:
        at = ("images",)
        raw = self.mapping(value, at, IMAGE_KEYS)
        images = {}
        for key, image in raw.items():
            text = self.string(
                image, (*at, key), hint="an image reference, e.g. `mirror.example.com/postgres:18`"
            )
            # The grammar admits no space, quote, '#', '$' or newline: an image value cannot
            # add YAML structure or a compose variable to the rendered file.
            try:
                check_image(text, where=None)
            except UsageError as exc:
                raise self.fail((*at, key), exc.message, hint=exc.hint or "") from None
            images[key] = text
        return images

    def _check_ports(self, config: Config) -> None:
        seen: dict[int, str] = {}
        for service, ports in config.ports().items():
            for name, port in ports.items():
                label = f"{service}.{name}"
                overridden = name in config.port_overrides.get(service, {})
                at = ("ports", service) if overridden else ("ports", "offset")
                if not 1 <= port <= 65535:
                    raise self.fail(
                        at,
                        f"port of {label} is {port} after the offset "
                        f"{config.port_offset}, outside 1-65535",
                        hint="choose a smaller `ports.offset` or another port",
                    )
                if port in seen:
                    raise self.fail(
                        at,
                        f"port {port} is used by both {seen[port]} and {label}",
                        hint="give one of them another port under `ports:`",
                    )
                seen[port] = label


def _key(at: tuple[str, ...]) -> str:
    return ".".join(at) or "(top level)"


def _kind(value: Any) -> str:
    from edaenv.located import kind

    return kind(value)


def render_config(
    project: str, broker: str, components: frozenset[str], port_offset: int, scaffold: str = "eda"
) -> str:
    """The edaenv.yaml that `init` writes: commented, so it reads as its own documentation."""

    def line(text: str, comment: str = "") -> str:
        return f"{text:<27} # {comment}" if comment else text

    lines = [
        "# edaenv.yaml: the single source of truth of this repository's event-driven dev stack.",
        "# Change it, then `edaenv render` (or `edaenv up`, which renders first).",
        "version: 1",
        line(f"project: {_scalar(project)}", "compose project name: containers, networks, volumes"),
        line(f"broker: {broker}", "kafka | redpanda | rabbitmq | nats"),
        line("components:", "what runs beside the broker"),
    ]
    for name in COMPONENTS:
        needs = f"needs {', '.join(REQUIRES[name])}" if name in REQUIRES else ""
        lines.append(line(f"  {name}: {'true' if name in components else 'false'}", needs))
    lines += [
        "ports:",
        line(f"  offset: {port_offset}", "added to every published port (127.0.0.1 only)"),
        line("  # postgres: 5433", "a service's port before the offset"),
        line("images: {}", "service -> image, e.g. for a registry mirror:"),
        "  # postgres: mirror.example.com/library/postgres:18",
        line(
            f"scaffold: {_scalar(scaffold)}",
            "the user-owned scaffold and the compose file live here",
        ),
    ]
    return "\n".join(lines) + "\n"


def _scalar(value: str) -> str:
    """A name as a YAML scalar that reads back as the same string: `0`, `null` or `1e3` as a
    plain scalar would be a number or nothing."""
    import json

    import yaml

    return value if yaml.safe_load(value) == value else json.dumps(value)
