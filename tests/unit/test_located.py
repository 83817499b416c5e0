"""edaenv/located.py: YAML read with the line of every value, anchors and keys given twice
refused with their file:line, and the pieces of messages config.py and scenarios share."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edaenv.errors import ConfigError
from edaenv.located import At, did_you_mean, kind, parse

# Keys and words that YAML reads back as the same strings (no `yes`, `null`, `1e3`).
keys = st.from_regex(r"k_[a-z0-9]{0,6}", fullmatch=True)
scalars = st.integers(-1000, 1000) | st.from_regex(r"w_[a-z0-9]{0,6}", fullmatch=True)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, min_size=1, max_size=4)


def emit(
    value: Any, *, padding: list[bool], duplicate: At | None = None
) -> tuple[str, dict[At, int], int]:
    """`value` in block style, the line each path should be told at (a key at its own line, a
    list item at the line its content starts) and the line of the duplicate key. `padding` puts
    blank and comment lines between entries; `duplicate` names a mapping that gets its first
    key again at its end."""
    out: list[str] = []
    expected: dict[At, int] = {}
    twice: list[int] = []
    gaps = iter(padding * 50)

    def scalar(item: Any) -> str | None:
        if isinstance(item, dict | list) and item:
            return None
        return "{}" if item == {} else "[]" if item == [] else str(item)

    def walk(item: Any, at: At, indent: str) -> None:
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            if next(gaps, False):
                out.append(f"{indent}# between\n" if len(out) % 2 else "\n")
            lead = f"{indent}{key}:" if isinstance(item, dict) else f"{indent}-"
            text = scalar(child)
            if text is not None:
                out.append(f"{lead} {text}\n")
                expected[(*at, key)] = len(out)
                continue
            out.append(f"{lead}\n")
            start = len(out)
            walk(child, (*at, key), indent + "  ")
            # A mapping or list is told at its key; a list item where its content starts.
            expected[(*at, key)] = start if isinstance(item, dict) else content(start)
        if at == duplicate:
            out.append(f"{indent}{next(iter(item))}: 0\n")
            twice.append(len(out))

    def content(after: int) -> int:
        lines = range(after + 1, len(out) + 1)
        return next(n for n in lines if out[n - 1].strip() and "#" not in out[n - 1])

    walk(value, (), "")
    expected[()] = content(0)
    return "".join(out), expected, twice[0] if twice else 0


@settings(max_examples=150, deadline=None)
@given(documents, st.lists(st.booleans(), max_size=8))
@example({"k_a": [[1, 2], {"k_b": []}]}, [True])
def test_each_path_is_told_at_the_line_its_key_or_item_starts(
    value: dict, padding: list[bool]
) -> None:
    text, expected, _ = emit(value, padding=padding)
    document = parse(text, "f.yaml", anchors="no anchors")
    assert document.data == value
    assert {at: document.line(at) for at in expected} == expected
    assert document.where(()) == f"f.yaml:{expected[()]}"


def mapping_paths(value: Any, at: At = ()) -> list[At]:
    if isinstance(value, dict):
        found = [at] if value else []
        return found + [p for k, v in value.items() for p in mapping_paths(v, (*at, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in mapping_paths(v, (*at, i))]
    return []


@settings(max_examples=100, deadline=None)
@given(documents, st.data())
def test_a_key_given_twice_anywhere_is_refused_at_its_second_line(
    value: dict, data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(mapping_paths(value)))
    text, expected, line = emit(value, padding=[], duplicate=target)
    with pytest.raises(ConfigError) as caught:
        parse(text, "f.yaml", anchors="no anchors")
    mapping = value
    for part in target:
        mapping = mapping[part]
    first = next(iter(mapping))
    assert caught.value.where == f"f.yaml:{line}"
    # A key of a mapping is told at its own line, whatever its value.
    assert caught.value.message == (
        f"key '{first}' is given twice (lines {expected[(*target, first)]} and {line})"
    )
    assert caught.value.hint == "keep one of them"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: &x 1\nb: 2\n", "f.yaml:1"),  # an anchor alone
        ("a: 1\nb:\n  - &x [1]\n  - *x\n", "f.yaml:3"),  # the anchor, before its alias
        ("a: [1, 2]\nb: *x\n", "f.yaml:2"),  # an alias to no anchor: refused all the same
    ],
)
def test_anchors_and_aliases_are_refused_at_their_line(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "f.yaml", anchors="no anchors in f")
    assert (caught.value.where, caught.value.message) == (where, "no anchors in f")
    assert caught.value.hint == "write the value out in full"


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    bomb = 'a: &a ["x", "x"]\n' + "".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [*{chr(97 + n)}, *{chr(97 + n)}]\n" for n in range(20)
    )
    with pytest.raises(ConfigError) as caught:
        parse(bomb, "f.yaml", anchors="no anchors")
    assert caught.value.where == "f.yaml:1"


def test_a_key_given_twice_in_a_list_item_is_refused() -> None:
    text = "steps:\n  - {action: kill}\n  - action: kill\n    role: relay\n    action: stop\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, "f.yaml", anchors="no anchors")
    assert str(caught.value) == "f.yaml:5: key 'action' is given twice (lines 3 and 5)"


@pytest.mark.parametrize(
    ("text", "start", "noticed", "problem"),
    [
        ('a: "x\nb: 1\n', "f.yaml:1", "f.yaml:3", "found unexpected end of stream"),
        ("a: {b: 1\n", "f.yaml:1", "f.yaml:2", "expected ',' or '}', but got '<stream end>'"),
        ("a: 1\nb c\nd:\n  e: 1\n", "f.yaml:2", "f.yaml:3", "could not find expected ':'"),
        ("a: !foo 1\n", "f.yaml:1", "f.yaml:1", "could not determine a constructor for the tag"),
        # Found by the reader, which has no line: told without one, or at line 1.
        ("a: \x01\n", "f.yaml", "f.yaml:1", "unacceptable character #x0001"),
    ],
)
def test_a_syntax_error_is_told_where_it_starts_or_where_it_was_noticed(
    text: str, start: str, noticed: str, problem: str
) -> None:
    for where_noticed, where in ((False, start), (True, noticed)):
        with pytest.raises(ConfigError) as caught:
            parse(text, "f.yaml", anchors="no anchors", where_noticed=where_noticed)
        assert caught.value.where == where
        assert caught.value.message.startswith(f"not valid YAML: {problem}")
        assert caught.value.hint == "fix the YAML syntax (indentation, colons, quotes) at that line"


def test_a_path_the_file_lacks_is_told_at_the_nearest_value_it_has() -> None:
    document = parse("# settings\n\nports:\n  offset: 3\nsteps:\n  - x\n", "f", anchors="")
    assert [document.line(at) for at in [(), ("ports", "kafka"), ("steps", 4), ("nope", 1)]] == [
        3,
        3,
        5,
        3,
    ]
    assert parse("", "f", anchors="").line(("project",)) == 1  # an empty file


def test_did_you_mean_names_the_closest_choice_or_nothing() -> None:
    assert did_you_mean("brokr", ("project", "broker")) == "did you mean 'broker'? "
    assert did_you_mean("zzz", ("project", "broker")) == ""


@pytest.mark.parametrize(
    ("value", "told"),
    [
        (None, "nothing"),
        (True, "a boolean True"),
        (3, "an integer 3"),
        (1.5, "a number 1.5"),
        ("ten", "a string 'ten'"),
        ([1], "a list"),
        ({"a": 1}, "a mapping"),
        (datetime.date(2026, 1, 2), "date"),
    ],
)
def test_kind_names_a_value_and_quotes_a_scalar(value: Any, told: str) -> None:
    assert kind(value) == told


def test_kind_takes_the_words_and_quoting_of_its_caller() -> None:
    words = {str: "text", int: "a number"}
    assert kind("x" * 200, names=words, quote=lambda v: "<cut>") == "text <cut>"
    assert kind(3, names=words) == "a number 3"
    assert kind([1], names=words) == "list"
