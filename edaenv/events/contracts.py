"""Event contracts: one JSON Schema per event type and version under the scaffold's events/.

Each schema carries its routing metadata under `x-edaenv`:
    {"event": "OrderPlaced", "version": 1, "topic": "orders", "key": "orderId",
     "aggregate": "Order", "owner": "orders-team"}

A contract is checked when it is loaded, by every command: the metadata against its grammar
(the topic becomes broker objects and file names, the event and aggregate go into CloudEvents
attributes and outbox columns), and every `$ref` must resolve inside the contract, since
edaenv fetches nothing. Each error names the file and the JSON pointer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from edaenv import names
from edaenv.errors import ContractError
from edaenv.events import jsondata

META_KEY = "x-edaenv"
REQUIRED_META = ("event", "version", "topic", "key", "owner")
SUFFIX = ".schema.json"
# Event and aggregate names: a plain identifier, as in `OrderPlaced.v1`.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}", re.ASCII)
KEY_MAX = 200
VERSION_MAX = 2**31 - 1

# Keywords whose value is a schema, an array of schemas, or an object of schemas (drafts 4 to
# 2020-12). Values of other keywords (const, enum, default, examples...) are data: a "$ref"
# there is not a reference.
ONE_SCHEMA = frozenset(
    (
        "additionalItems",
        "additionalProperties",
        "contains",
        "contentSchema",
        "else",
        "if",
        "items",
        "not",
        "propertyNames",
        "then",
        "unevaluatedItems",
        "unevaluatedProperties",
    )
)
SCHEMA_ARRAYS = frozenset(("allOf", "anyOf", "oneOf", "prefixItems", "items"))
SCHEMA_OBJECTS = frozenset(
    ("$defs", "definitions", "dependentSchemas", "dependencies", "patternProperties", "properties")
)


@dataclass(frozen=True)
class Contract:
    event: str
    version: int
    topic: str
    key: str
    owner: str
    aggregate: str
    schema: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return f"{self.event}.v{self.version}"


def load_contracts(events_dir: Path) -> list[Contract]:
    """Every contract under events_dir, sorted by event type then version."""
    if not events_dir.is_dir():
        return []
    contracts = [load_contract(path) for path in sorted(events_dir.rglob(f"*{SUFFIX}"))]
    seen: dict[str, Path] = {}
    for contract in contracts:
        if contract.name in seen:
            raise ContractError(
                f"{contract.name} is defined twice: {seen[contract.name]} and {contract.path}",
                hint="keep one file per event type and version",
            )
        seen[contract.name] = contract.path
    return sorted(contracts, key=lambda c: (c.event, c.version))


def load_contract(path: Path) -> Contract:
    from edaenv.config import read_utf8

    try:
        text = read_utf8(path, where=str(path), hint="save the contract as UTF-8")
    except OSError as exc:
        raise ContractError(
            f"cannot read the contract: {exc.strerror}",
            where=str(path),
            hint="a contract is a readable file <Event>.v<N>.schema.json",
        ) from None
    try:
        schema = jsondata.parse(text)
    except jsondata.BadJson as bad:
        if bad.line is not None:
            raise ContractError(
                bad.message, where=f"{path}:{bad.line}", hint="fix the JSON syntax at that line"
            ) from None
        raise ContractError(bad.message, where=f"{path}#{bad.pointer}", hint=bad.hint) from None
    meta = schema.get(META_KEY) if isinstance(schema, dict) else None
    if not isinstance(meta, dict):
        raise ContractError(
            f"the schema has no '{META_KEY}' object",
            where=str(path),
            hint=f'add "{META_KEY}": {{"event", "version", "topic", '
            f'"key", "owner"}} to the schema\'s top level',
        )
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ContractError(
            f"'{META_KEY}' lacks {', '.join(missing)}",
            where=f"{path}#/{META_KEY}",
            hint=f"every contract names: {', '.join(REQUIRED_META)}",
        )
    contract = Contract(
        event=_identifier(meta, "event", path, "OrderPlaced"),
        version=_version(meta["version"], path),
        topic=names.check_topic(meta["topic"], where=f"{path}#/{META_KEY}/topic"),
        key=_key(meta["key"], schema, path),
        owner=names.check_owner(meta["owner"], where=f"{path}#/{META_KEY}/owner"),
        aggregate=_identifier(meta, "aggregate", path, "Order")
        if "aggregate" in meta
        else meta["event"],
        schema=schema,
        path=path,
    )
    if "$schema" in schema and not isinstance(schema["$schema"], str):
        raise ContractError(
            f"$schema must be the URI of a JSON Schema draft, not {_shown(schema['$schema'])}",
            where=f"{path}#/$schema",
            hint='e.g. "$schema": "https://json-schema.org/draft/2020-12/schema"',
        )
    check_refs(schema, path)
    return contract


def _identifier(meta: dict[str, Any], field: str, path: Path, example: str) -> str:
    value = meta[field]
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ContractError(
            f"{_shown(value)} cannot be an {field} name",
            where=f"{path}#/{META_KEY}/{field}",
            hint="a plain identifier: letters, digits and '_', not starting with a digit "
            f"(at most 100), e.g. '{example}'",
        )
    return value


def _version(value: Any, path: Path) -> int:
    if type(value) is not int or not 1 <= value <= VERSION_MAX:
        raise ContractError(
            f"the version must be a positive integer, not {_shown(value)}",
            where=f"{path}#/{META_KEY}/version",
            hint='e.g. "version": 1',
        )
    return value


def _key(value: Any, schema: dict[str, Any], path: Path) -> str:
    """The data's field holding the aggregate id (the message key)."""
    where = f"{path}#/{META_KEY}/key"
    if not isinstance(value, str) or not 0 < len(value) <= KEY_MAX or not value.isprintable():
        raise ContractError(
            f"{_shown(value)} cannot be the key",
            where=where,
            hint=f"name the property holding the aggregate id (at most {KEY_MAX} characters, "
            "no control characters), e.g. 'orderId'",
        )
    properties = schema.get("properties")
    if isinstance(properties, dict) and value not in properties:
        known = ", ".join(names.shown(name) for name in list(properties)[:10])
        raise ContractError(
            f"the key {names.shown(value)} is not one of the schema's properties",
            where=where,
            hint=f"name the property holding the aggregate id: {known or 'add it to properties'}",
        )
    return value


def _shown(value: Any) -> str:
    """A value of the contract as a message quotes it: a string as names.shown does, any other
    JSON value as JSON (`true`, not Python's `True`)."""
    if isinstance(value, str):
        return names.shown(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= names.SHOWN_MAX else f"{text[: names.SHOWN_MAX - 3]}..."


def check_refs(schema: dict[str, Any], path: Path) -> None:
    """Every `$ref` resolves inside the contract (or to a JSON Schema meta-schema), the way
    jsonschema resolves it: an unresolvable one would only fail on the first event reaching
    it."""
    refs = _refs(schema)
    if not refs:
        return
    import jsonschema_specifications
    from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable
    from referencing.jsonschema import DRAFT202012, specification_with

    dialect = schema.get("$schema")
    specification = (
        specification_with(dialect, default=DRAFT202012)
        if isinstance(dialect, str)
        else DRAFT202012
    )
    root = specification.create_resource(schema)
    registry = jsonschema_specifications.REGISTRY.with_resource(root.id() or "", root).crawl()
    for base, at, ref in refs:
        try:
            registry.resolver(base_uri=base).lookup(ref)
        except (PointerToNowhere, NoSuchAnchor):
            reason = "it points to nothing in this contract"
        except Unresolvable:
            reason = "edaenv resolves references inside the contract only, and fetches nothing"
        else:
            continue
        raise ContractError(
            f"$ref {names.shown(ref)} cannot be resolved: {reason}",
            where=f"{path}#{jsondata.pointer(at)}/$ref",
            hint='point it at a definition in this file, e.g. "$ref": "#/$defs/Address"',
        )


def _refs(schema: Any) -> list[tuple[str, list[Any], str]]:
    """(base URI, path, ref) of every `$ref` in a schema and its subschemas; iterative."""
    found = []
    stack: list[tuple[Any, list[Any], str]] = [(schema, [], "")]
    while stack:
        node, at, base = stack.pop()
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("$id"), str):
            base = urljoin(base, node["$id"])
        if isinstance(node.get("$ref"), str):
            found.append((base, at, node["$ref"]))
        for keyword, value in node.items():
            if keyword in ONE_SCHEMA and isinstance(value, dict):
                stack.append((value, [*at, keyword], base))
            elif keyword in SCHEMA_ARRAYS and isinstance(value, list):
                stack += [(sub, [*at, keyword, i], base) for i, sub in enumerate(value)]
            elif keyword in SCHEMA_OBJECTS and isinstance(value, dict):
                stack += [(sub, [*at, keyword, name], base) for name, sub in value.items()]
    return sorted(found, key=lambda item: [str(part) for part in item[1]])


def topics(contracts: list[Contract]) -> list[str]:
    return sorted({c.topic for c in contracts})
