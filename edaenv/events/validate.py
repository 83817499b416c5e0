"""Event data against its contract, and the JSON / JSONL the user gives: every error names where
(the argument, or file:line, then the JSON pointer), the rule broken, and how to fix it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from edaenv.errors import ContractError, UsageError
from edaenv.events import jsondata
from edaenv.events.contracts import Contract
from edaenv.names import shown


class Validator:
    """A contract's schema compiled once (format assertions on), reused for every event."""

    def __init__(self, contract: Contract):
        import jsonschema

        cls = jsonschema.validators.validator_for(contract.schema)
        try:
            cls.check_schema(contract.schema)
        except jsonschema.SchemaError as exc:
            pointer = _pointer(exc.absolute_path)
            raise ContractError(
                f"the contract itself is not a valid JSON Schema: {_short(exc.message)}",
                where=f"{contract.path}#{pointer}",
                hint="fix the schema; https://json-schema.org/understanding-"
                "json-schema/ lists the keywords",
            ) from None
        except RecursionError:
            raise ContractError(
                "the schema is nested too deeply to check",
                where=str(contract.path),
                hint="flatten it: move nested schemas to $defs and refer to them with $ref",
            ) from None
        self.contract = contract
        self._validator = cls(contract.schema, format_checker=cls.FORMAT_CHECKER)
        # The common keywords compiled to plain Python: ~10x faster than jsonschema. Schemas
        # using others (pattern, $ref, oneOf...) are checked by jsonschema alone.
        self._fast = _compile(contract.schema)

    def is_valid(self, data: Any) -> bool:
        if self._fast is not None:
            return self._fast(data)
        try:
            return bool(self._validator.is_valid(data))
        except RecursionError:  # a recursive schema and data nested as deep: not acceptable
            return False

    def check(self, data: Any, where: str) -> None:
        """Raise ContractError naming the JSON pointer and the rule of the first violation."""
        found = self.violation(data)
        if found is None:
            return
        raise ContractError(
            f"{found.message} (rule '{found.rule}' of {self.contract.name})",
            where=f"{where}#{found.pointer}",
            hint=f"make the data match {_display(self.contract.path)}#{found.schema_pointer}",
        )

    def violation(self, data: Any) -> Violation | None:
        """The first rule the data breaks (jsonschema's best match); None when it is valid."""
        import jsonschema

        if self._fast is not None and self._fast(data):
            return None
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(data))
        except RecursionError:
            return Violation("", "depth", "", "nested too deeply to check against the schema")
        if error is None:
            return None
        return Violation(
            pointer=_pointer(error.absolute_path),
            rule=str(error.validator),
            schema_pointer=_pointer(error.schema_path),
            message=_message(error),
        )


@dataclass(frozen=True)
class Violation:
    """Where data breaks its contract: a JSON pointer into the data, the keyword broken
    (`minimum`), and where that rule is in the schema (`/properties/total/minimum`)."""

    pointer: str
    rule: str
    schema_pointer: str
    message: str


Check = Callable[[Any], bool]
MESSAGE_MAX = 300
ANNOTATIONS = {
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "x-edaenv",
}
NUMBER = "(isinstance({v}, (int, float)) and not isinstance({v}, bool))"
TYPES = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
    "number": NUMBER,
    "integer": "((isinstance({v}, int) and not isinstance({v}, bool)) or "
    "(isinstance({v}, float) and {v}.is_integer()))",
}
BOUNDS = {"minimum": "<", "maximum": ">", "exclusiveMinimum": "<=", "exclusiveMaximum": ">="}
LENGTHS = {
    "minLength": ("str", "<"),
    "maxLength": ("str", ">"),
    "minItems": ("list", "<"),
    "maxItems": ("list", ">"),
}


class _Unsupported(Exception):
    pass


def _compile(schema: Any) -> Check | None:
    """The schema as Python source (one function, no walk per event), equivalent to jsonschema
    for the keywords below; None when the schema uses any other."""
    constants: list[Any] = []
    lines = ["def check(v0):"]
    try:
        _emit(schema, 0, 1, lines, constants)
    except (_Unsupported, RecursionError):
        return None
    lines.append("    return True")
    # Python refuses code nested too deeply (100 indents, 20 loops): jsonschema checks those.
    try:
        code = compile("\n".join(lines), "<contract>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        return None
    namespace: dict[str, Any] = {
        "K": constants,
        "_multiple": _multiple,
        "_is_uuid": _is_uuid,
        "_in_enum": _in_enum,
    }
    # Only the templates above become source; every value from the schema is a K[i] constant.
    exec(code, namespace)
    check: Check = namespace["check"]
    return check


def _emit(schema: Any, depth: int, indent: int, lines: list[str], constants: list[Any]) -> None:
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise _Unsupported
    v, pad = f"v{depth}", "    " * indent

    def const(value: Any) -> str:
        constants.append(value)
        return f"K[{len(constants) - 1}]"

    def fail_if(condition: str) -> None:
        lines.append(f"{pad}if {condition}: return False")

    number = NUMBER.format(v=v)
    for keyword, value in schema.items():
        if keyword in ANNOTATIONS or (keyword == "additionalProperties" and value is True):
            continue
        if keyword == "type":
            names = value if isinstance(value, list) else [value]
            if not names or not all(name in TYPES for name in names):
                raise _Unsupported
            fail_if("not (" + " or ".join(TYPES[n].format(v=v) for n in names) + ")")
        elif keyword == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                key = const(name)
                lines.append(f"{pad}if isinstance({v}, dict) and {key} in {v}:")
                lines.append(f"{pad}    v{depth + 1} = {v}[{key}]")
                lines.append(f"{pad}    pass")
                _emit(sub, depth + 1, indent + 1, lines, constants)
        elif keyword == "required" and isinstance(value, list):
            fail_if(f"isinstance({v}, dict) and not {const(frozenset(value))} <= {v}.keys()")
        elif (
            keyword == "additionalProperties"
            and value is False
            and "patternProperties" not in schema
        ):
            known = const(frozenset(schema.get("properties", {})))
            fail_if(f"isinstance({v}, dict) and not {v}.keys() <= {known}")
        elif keyword in ("enum", "const"):
            options = value if keyword == "enum" else [value]
            if not isinstance(options, list) or not all(
                isinstance(o, str | int | float | bool) or o is None for o in options
            ):
                raise _Unsupported
            fail_if(f"not _in_enum({v}, {const(options)})")
        elif keyword in BOUNDS and isinstance(value, int | float) and not isinstance(value, bool):
            fail_if(f"{number} and {v} {BOUNDS[keyword]} {const(value)}")
        elif (
            keyword == "multipleOf"
            and isinstance(value, int | float)
            and value > 0
            and not isinstance(value, bool)
        ):
            fail_if(f"{number} and not _multiple({v}, {const(value)})")
        elif keyword in LENGTHS and isinstance(value, int) and not isinstance(value, bool):
            kind, compare = LENGTHS[keyword]
            fail_if(f"isinstance({v}, {kind}) and len({v}) {compare} {const(value)}")
        elif keyword == "format" and value == "uuid":
            fail_if(f"isinstance({v}, str) and not _is_uuid({v})")
        elif keyword == "items" and isinstance(value, dict):
            lines.append(f"{pad}if isinstance({v}, list):")
            lines.append(f"{pad}    for v{depth + 1} in {v}:")
            lines.append(f"{pad}        pass")
            _emit(value, depth + 1, indent + 2, lines, constants)
        else:
            raise _Unsupported


def _in_enum(x: Any, options: list[Any]) -> bool:
    """jsonschema's equality: true is not 1, but 1 is 1.0."""
    for o in options:
        if type(x) is type(o) and x == o:
            return True
        if (
            isinstance(x, int | float)
            and isinstance(o, int | float)
            and not isinstance(x, bool)
            and not isinstance(o, bool)
            and x == o
        ):
            return True
    return False


def _multiple(x: float, step: float) -> bool:
    """jsonschema's rule, float quirks included (it is the reference)."""
    if isinstance(step, float):
        quotient = x / step
        try:
            return int(quotient) == quotient
        except OverflowError:
            return False  # jsonschema then decides, exactly
    return not x % step


_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}").fullmatch


def _is_uuid(text: str) -> bool:
    if _CANONICAL_UUID(text):  # the usual form, without building a UUID
        return True
    try:
        UUID(text)
    except ValueError:
        return False
    return len(text) > 23 and all(text[i] == "-" for i in (8, 13, 18, 23))


def _message(error: Any) -> str:
    """jsonschema's message with the offending value quoted short: a rejected 10 MB string
    must not come back in full."""
    text = str(error.message)
    quoted = repr(error.instance)
    if len(quoted) > len(shown(error.instance)):
        text = text.replace(quoted, shown(error.instance))
    return _short(text)


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else f"{text[: MESSAGE_MAX - 3]}..."


def parse_json(text: str, where: str) -> Any:
    """The event data of an argument, a file or stdin: strict JSON (jsondata), errors at
    `where` (with the line when the text has several) and the JSON pointer."""
    try:
        return jsondata.parse(text)
    except jsondata.BadJson as bad:
        if bad.line is None:
            raise UsageError(bad.message, where=f"{where}#{bad.pointer}", hint=bad.hint) from None
        at = f":{bad.line}" if "\n" in text.strip() else ""
        raise UsageError(
            f"{bad.message} (column {bad.column})",
            where=f"{where}{at}",
            hint='quote keys and strings with ", no trailing commas; e.g. \'{"orderId": "..."}\'',
        ) from None


def read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, data) of every non-blank line: where is `file:line`."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise UsageError(
            f"cannot read {path}: {exc.strerror}", where="--from-file", hint="check the path"
        ) from None
    with handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            where = f"{_display(path)}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(
                    f"not UTF-8 text: byte {raw[exc.start]:#04x} at column {exc.start + 1}",
                    where=where,
                    hint="save the file as UTF-8; nothing was published",
                ) from None
            try:
                yield where, jsondata.parse(line)
            except jsondata.BadJson as bad:
                if bad.line is None:
                    raise UsageError(
                        bad.message, where=f"{where}#{bad.pointer}", hint=bad.hint
                    ) from None
                raise UsageError(
                    f"{bad.message} (column {bad.column})",
                    where=where,
                    hint="one JSON object per line (JSON Lines); nothing was published",
                ) from None


def _pointer(parts: Any) -> str:
    return jsondata.pointer(parts)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
