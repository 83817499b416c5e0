"""The YAML files users edit (edaenv.yaml, verify scenarios), read so that every mistake names
its file:line, and the pieces their messages share. Each caller keeps its own schema."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edaenv.errors import ConfigError

if TYPE_CHECKING:
    import yaml

# A value's place in a document: mapping keys and list indexes (0-based), outermost first.
At = tuple[str | int, ...]
SYNTAX_HINT = "fix the YAML syntax (indentation, colons, quotes) at that line"


@dataclass(frozen=True)
class Document:
    """A YAML document as plain data, and the line of each value: a mapping or list at its key,
    a scalar where the scalar is (`components:` then `  grafana false` on the next line)."""

    display: str  # the file as messages name it
    data: Any
    lines: Mapping[At, int]

    def line(self, at: At) -> int:
        """The line of `at`, or of the nearest enclosing value the file has (a key left out is
        told at its mapping)."""
        while at and at not in self.lines:
            at = at[:-1]
        return self.lines.get(at, 1)

    def where(self, at: At) -> str:
        return f"{self.display}:{self.line(at)}"

    def fail(self, at: At, message: str, hint: str) -> ConfigError:
        return ConfigError(message, where=self.where(at), hint=hint)


def parse(text: str, display: str, *, anchors: str, where_noticed: bool = False) -> Document:
    """The document of `text`, refusing anchors and aliases (with the message `anchors`) and a
    key given twice. A syntax error is told at the line its mistake starts on, or with
    `where_noticed` at the line YAML noticed it on."""
    import yaml

    try:
        _refuse_anchors(text, display, anchors)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        where = f"{display}{_error_line(exc, text, where_noticed)}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", where=where, hint=SYNTAX_HINT) from None
    lines: dict[At, int] = {}
    if node is not None:
        _index(node, (), lines, display)
    return Document(display, data, lines)


def _refuse_anchors(text: str, display: str, message: str) -> None:
    """The files read here are a few lines of settings: anchors and aliases buy nothing there,
    and a 22-line alias bomb took 33 s and 3 GB to load. Refused from the event stream, before
    any document is built."""
    import yaml

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1 if event.start_mark else 1
            raise ConfigError(
                message, where=f"{display}:{line}", hint="write the value out in full"
            )


def _index(node: yaml.Node, at: At, lines: dict[At, int], display: str) -> None:
    """Records the line of every value under `node`; refuses a key given twice, which YAML
    would drop without a word (the last one wins)."""
    import yaml

    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen:
                raise ConfigError(
                    f"key '{name}' is given twice (lines {seen[name]} and {line})",
                    where=f"{display}:{line}",
                    hint="keep one of them",
                )
            seen[name] = line
            _index(value, (*at, name), lines, display)
            if not isinstance(value, yaml.ScalarNode):
                lines[(*at, name)] = line
    elif isinstance(node, yaml.SequenceNode):
        for number, item in enumerate(node.value):
            _index(item, (*at, number), lines, display)


def _error_line(exc: Exception, text: str, noticed: bool) -> str:
    """The line of a YAML error as ":<line>", or nothing when it has none. A key without its
    ':', an unclosed quote or bracket are noticed only on a later line (the problem mark); the
    line they start on is the context mark. A key without its ':' just before a mapping reads as
    text running on into that mapping's first key, where YAML then objects to the ':'."""
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context_mark", None)
    if noticed:
        mark = mark or context
        return f":{mark.line + 1}" if mark else ":1"
    reason = getattr(exc, "context", None) or ""
    if reason.startswith(("while scanning a simple key", "while scanning a quoted")) or (
        reason.startswith("while parsing a flow")
    ):
        mark = context or mark
    elif mark is not None and getattr(exc, "problem", "") == "mapping values are not allowed here":
        lines = text.splitlines()
        before = [n for n in range(min(mark.line, len(lines))) if lines[n].strip()]
        previous = lines[before[-1]].lstrip() if before else ":"
        if ":" not in previous and not previous.startswith(("-", "#")):
            return f":{before[-1] + 1}"
    return f":{mark.line + 1}" if mark else ""


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """The start of a hint naming the closest of `choices` ("did you mean 'broker'? "), or
    nothing when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'? " if close else ""


KINDS: Mapping[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def kind(
    value: Any, *, names: Mapping[type, str] = KINDS, quote: Callable[[object], str] = repr
) -> str:
    """What a value read from YAML is, for `got ...` in a message: its kind in `names` (else
    its type's name: a date, a set), followed by the value itself when it is a scalar."""
    if value is None:
        return "nothing"
    name = names.get(type(value), type(value).__name__)
    return f"{name} {quote(value)}" if isinstance(value, str | int | float | bool) else name
