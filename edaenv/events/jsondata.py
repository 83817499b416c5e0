"""JSON that a user wrote (an event, a line of a JSON Lines file, a contract), read strictly.

Python's json module reads and writes NaN and Infinity, which JSON does not have: a broker or
consumer in another language then receives a document it cannot parse. Nesting is bounded
because the parsers and validators downstream recurse once (or more) per level: 10,000 levels
exhaust Python's stack. Every problem is located: a line and column for a syntax error, a JSON
pointer for a value.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from edaenv.names import shown

# Levels of objects and arrays in one document. Real events and contracts use a handful; 64
# keeps jsonschema (several frames per level) far from the interpreter's recursion limit.
MAX_DEPTH = 64
POINTER_MAX = 200

DEEP_HINT = f"flatten the data: at most {MAX_DEPTH} levels of objects and arrays"
NUMBER_HINT = (
    "JSON numbers are finite: write a number (an exponent such as 1e400 reads as Infinity), or null"
)
BIG_INTEGER_HINT = "send a number that long as a string"
SURROGATE_HINT = "write the character itself (UTF-8), or a complete surrogate pair"

_INFINITE = (math.inf, -math.inf)


class _NotFinite(Exception):  # not a ValueError: json's own errors are
    pass


def _finite(digits: str) -> float:
    value = float(digits)
    if value in _INFINITE:  # 1e400
        raise _NotFinite
    return value


def _no_constant(name: str) -> float:  # NaN, Infinity, -Infinity
    raise _NotFinite


# Built once: json.loads with hooks builds a decoder per call, which costs more than parsing.
_strict = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant).decode
_lenient = json.JSONDecoder().decode
# A cheap hint that a parsed document needs the walk below; the walk decides.
_MAY_HAVE_SURROGATE = re.compile(r"\\u[dD][89abAB]").search
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')
_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# JSONEncoder.encode() builds json's C encoder for every call, which costs about as much as
# encoding an event: built once here with encode()'s settings (None without the C module).
# No circular-reference markers, which a shared encoder would share between threads: a cycle
# ends in RecursionError, which encode() reports like any data nested too deeply.
# A private interface of the json module: a Python where it differs falls back to encode().
_c_encode: Any = None
with contextlib.suppress(TypeError):
    _c_encode = json.encoder.c_make_encoder and json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )


def _encode(data: Any) -> str:
    if _c_encode is None or isinstance(data, str):
        return _encoder.encode(data)
    return "".join(_c_encode(data, 0))


class BadJson(Exception):
    """Where a document is not the JSON edaenv accepts: a syntax error has a line and column,
    any other problem a JSON pointer."""

    def __init__(
        self,
        message: str,
        hint: str,
        *,
        pointer: str = "",
        line: int | None = None,
        column: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.pointer = pointer
        self.line = line
        self.column = column


def parse(text: str) -> Any:
    """The document in text; BadJson when it is no JSON, nests deeper than MAX_DEPTH, or holds
    a number that is not finite, an integer Python will not convert, or a lone surrogate."""
    try:
        data = _strict(text)
    except json.JSONDecodeError as exc:
        raise BadJson(f"not valid JSON: {exc.msg}", "", line=exc.lineno, column=exc.colno) from None
    except RecursionError:
        raise BadJson(
            f"nested deeper than {MAX_DEPTH} levels", DEEP_HINT, pointer=_deep_pointer(text)
        ) from None
    except _NotFinite:
        check(_lenient(text))  # finds it, with its pointer
        raise AssertionError("a number that is not finite, not found again") from None
    except ValueError:  # an integer longer than sys.get_int_max_str_digits()
        raise _big_integer(text) from None
    if text.count("[") + text.count("{") > MAX_DEPTH or (
        "\\u" in text and _MAY_HAVE_SURROGATE(text)
    ):
        check(data)
    return data


def encode(data: Any) -> bytes:
    """Compact UTF-8 JSON of data given in-process (generated, or parsed above); BadJson,
    with the pointer, for anything parse() would refuse."""
    try:
        text = _encode(data)
        body = text.encode()
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        check(data)
        raise  # check() found nothing: a bug, not the data's fault
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH:
        check(data)
    return body


def check(data: Any) -> None:
    """Raise BadJson at the first value (in document order) that JSON or edaenv refuses."""
    found = _first(data, _value_problem)
    if found is not None:
        path, message, hint = found
        raise BadJson(message, hint, pointer=pointer(path))


def pointer(parts: Any) -> str:
    """An RFC 6901 JSON pointer (the whole document is ''), cut short when it is long."""
    text = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    if len(text) <= POINTER_MAX:
        return text
    half = POINTER_MAX // 2
    return f"{text[:half]}...{text[-half:]}"


Problem = tuple[str, str]  # message, hint


def _first(
    data: Any, problem_of: Callable[[Any], Problem | None]
) -> tuple[list[Any], str, str] | None:
    """(path, message, hint) of the first value (or key) refused by problem_of, or nested
    deeper than MAX_DEPTH; iterative, whatever the depth."""
    problem = problem_of(data)
    if problem is not None:
        return [], *problem
    if not isinstance(data, dict | list | tuple):
        return None
    path: list[Any] = []
    stack = [_children(data)]
    while stack:
        for key, value in stack[-1]:
            problem = problem_of(value) or (problem_of(key) if isinstance(key, str) else None)
            if problem is not None:
                return [*path, key], *problem
            if isinstance(value, dict | list | tuple):
                if len(stack) >= MAX_DEPTH:
                    return [*path, key], f"nested deeper than {MAX_DEPTH} levels", DEEP_HINT
                path.append(key)
                stack.append(_children(value))
                break
        else:
            stack.pop()
            if path:
                path.pop()
    return None


def _children(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Any:
    return iter(value.items() if isinstance(value, dict) else enumerate(value))


def _value_problem(value: Any) -> Problem | None:
    if isinstance(value, float) and not math.isfinite(value):
        name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"{name} is not a JSON number", NUMBER_HINT
    if isinstance(value, str):
        return _text_problem(value)
    if value is None or isinstance(value, bool | int | float | dict | list | tuple):
        return None
    return f"a {type(value).__name__} is not a JSON value", "give JSON data"


def _text_problem(text: str) -> Problem | None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"{shown(text)} has a lone surrogate at character {exc.start}", SURROGATE_HINT
    return None


def _deep_pointer(text: str) -> str:
    """The pointer of the first object or array nested deeper than MAX_DEPTH, found in the
    text (for documents too deep to parse at all)."""
    stack: list[list[Any]] = []  # per open container: [kind, index or key]
    last_string = ""
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            if len(stack) >= MAX_DEPTH:
                return pointer(slot for _, slot in stack)
            stack.append([token, 0 if token == "[" else ""])
        elif token in "]}":
            if stack:
                stack.pop()
        elif token == ",":
            if stack and stack[-1][0] == "[":
                stack[-1][1] += 1
        elif token == ":":
            if stack and stack[-1][0] == "{":
                try:
                    stack[-1][1] = json.loads(last_string)
                except ValueError:
                    stack[-1][1] = last_string
        else:
            last_string = token
    return ""


def _big_integer(text: str) -> BadJson:
    """The integer too long for Python to convert, located by parsing again with such
    integers kept as text."""
    limit = sys.get_int_max_str_digits()
    message = f"an integer of more than {limit} digits"

    class Long(str):
        pass

    def integer(digits: str) -> Any:
        return Long(digits) if len(digits.lstrip("-")) > limit else int(digits)

    try:
        data = json.loads(text, parse_int=integer)
    except (ValueError, RecursionError):
        return BadJson(message, BIG_INTEGER_HINT)
    found = _first(
        data, lambda value: (message, BIG_INTEGER_HINT) if isinstance(value, Long) else None
    )
    return BadJson(message, BIG_INTEGER_HINT, pointer=pointer(found[0]) if found else "")
