"""`init` turns flags and answers into JSON (the contract) and Python (the sample consumer): any
text either is refused with exit 2 and nothing written, or lands there exactly as given."""

from __future__ import annotations

import ast
import json
import os
import pty
import select
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from edaenv import names
from edaenv.errors import UsageError
from edaenv.stack.files import commit_files
from edaenv.stack.scaffold import InitPlan, init
from tests.conftest import REPO, run_edaenv

CONTRACT = "eda/events/OrderPlaced.v1.schema.json"
CONSUMER = "eda/consumer/main.py"


def contract_of(repo: Path) -> dict:
    return json.loads((repo / CONTRACT).read_text(encoding="utf-8"))


def topic_default(repo: Path) -> object:
    """The default of TOPIC in consumer/main.py: `os.environ.get("EDAENV_TOPIC", <this>)`."""
    tree = ast.parse((repo / CONSUMER).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["TOPIC"]:
            call = node.value
            assert isinstance(call, ast.Call) and ast.unparse(call.func) == "os.environ.get"
            return ast.literal_eval(call.args[1])
    raise AssertionError("no TOPIC in consumer/main.py")


def accepted(check, value: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        check(value, where=None)
    except UsageError:
        return False
    return True


# Text that breaks JSON, Python, YAML and Jinja when pasted, mixed with plain names.
TRICKY = ["'", '"', '"""', "\\", "\n", "\r", "{{", "}}", "{%", "$", "#", ": ", "\x00", "é", "🙂"]
text = st.lists(
    st.one_of(
        st.sampled_from(TRICKY), st.from_regex(names.TOPIC, fullmatch=True), st.text(max_size=8)
    ),
    max_size=5,
).map("".join)
topics = st.one_of(st.from_regex(names.TOPIC, fullmatch=True), text)
owners = st.one_of(st.from_regex(names.OWNER, fullmatch=True), text)
projects = st.one_of(st.just("shop"), st.from_regex(names.PROJECT, fullmatch=True), text)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(project=projects, topic=topics, owner=owners)
@example(project="shop", topic='a"b', owner="team")  # was an invalid contract, exit 0
@example(project="shop", topic='x", __import__("os").system("id"), "', owner="team")  # code
@example(project="shop", topic="orders", owner='a"b')
@example(project="x\n", topic="orders", owner="team")  # passed the old `$` check
@example(project="shop", topic="orders", owner="")  # was written as ""
@example(project="0", topic="0", owner="0")  # `project: 0` read back as a number
@example(project="null", topic="true", owner="1e3")
@example(project="shop", topic="{{ 7 * 7 }}", owner="{% raw %}")
@example(project="shop", topic="orders\n", owner="team\n")
@example(project="shop", topic="a" * 201, owner="t" * 101)
@example(project="shop", topic="shop.orders-v2_x", owner="Payments Team @ shop/eu.west")
def test_every_input_is_refused_or_lands_exactly(project: str, topic: str, owner: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        valid = all(
            accepted(check, value)
            for check, value in (
                (names.check_project, project),
                (names.check_topic, topic),
                (names.check_owner, owner),
            )
        )
        try:
            init(InitPlan(target=repo, project=project, topic=topic, owner=owner))
        except UsageError as exc:
            event("refused")
            assert exc.exit_code == 2
            assert not valid, f"refused a valid input: {exc}"
            assert not repo.exists()
            return
        event("accepted")
        assert valid, "accepted an input its grammar refuses"
        contract = contract_of(repo)
        assert (contract["x-edaenv"]["topic"], contract["x-edaenv"]["owner"]) == (topic, owner)
        assert contract["$id"] == f"urn:{project}:events:OrderPlaced:v1"
        assert topic_default(repo) == topic
        assert yaml.safe_load((repo / "eda/compose.yaml").read_text())["name"] == project


@pytest.mark.parametrize(
    ("flag", "value", "shown"),
    [
        ("--topic", 'a"b', "'a\"b' cannot be a topic"),
        ("--topic", 'x", __import__("os").system("id"), "', "cannot be a topic"),
        ("--owner", "", "'' cannot be an owner"),
        ("--name", "x\n", "'x\\n' cannot be a compose project name"),
    ],
)
def test_cli_refuses_text_that_is_not_a_name(
    project: Path, flag: str, value: str, shown: str
) -> None:
    result = run_edaenv("init", "--defaults", flag, value, cwd=project)
    assert result.code == 2
    assert result.err.startswith(f"error: {flag}: ") and shown in result.err
    assert "  hint: " in result.err
    assert sorted(p.name for p in project.iterdir()) == [".git"]


def test_cli_writes_an_unusual_but_valid_owner_as_given(project: Path) -> None:
    owner = "Payments Team @ shop/eu.west"
    result = run_edaenv(
        "init", "--defaults", "--owner", owner, "--topic", "shop.orders", cwd=project
    )
    assert result.code == 0, result.err
    assert contract_of(project)["x-edaenv"]["owner"] == owner
    assert topic_default(project) == "shop.orders"


def test_init_naming_a_file_writes_nothing(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    result = run_edaenv("init", "--defaults", str(file), cwd=tmp_path)
    assert (result.code, result.err) == (
        2,
        f"error: {file}: is not a directory\n"
        "  hint: give `edaenv init` the repository's directory (or a new one to create)\n",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_secrets_are_private_from_the_first_byte(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The staged .env is 0600 when it is created, before any byte is written to it: there is
    no moment where another user could open it."""
    created: dict[str, int] = {}
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, mode, *args, **kwargs)
        created[os.path.basename(path)] = stat.S_IMODE(os.fstat(fd).st_mode)
        return fd

    monkeypatch.setattr(os, "open", spy)
    init(InitPlan(target=tmp_path / "shop", project="shop", owner="team"))
    monkeypatch.undo()
    staged_env = [mode for name, mode in created.items() if name.endswith(".env")]
    assert staged_env and set(staged_env) == {0o600}
    assert stat.S_IMODE((tmp_path / "shop/eda/.env").stat().st_mode) == 0o600


def test_commit_files_refuses_a_directory_in_the_way_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old")
    (tmp_path / "b.txt").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        commit_files({tmp_path / "a.txt": "new", tmp_path / "b.txt": "x"}, staging=tmp_path)
    assert caught.value.filename == str(tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_scaffold_gitignore_covers_edaenvs_temporary_files(project: Path) -> None:
    assert run_edaenv("init", "--defaults", cwd=project).code == 0
    for leftover in (".edaenv-staging-1234/compose.yaml", ".compose.yaml.tmp", ".env.tmp"):
        path = project / "eda" / leftover
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "eda"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ".tmp" not in status and "staging" not in status and "eda/.env" not in status
    assert "eda/compose.yaml" in status


def test_copier_refuses_what_names_refuses(tmp_path: Path) -> None:
    """The template's own validators, for anyone running copier directly on it."""
    from copier import run_copy

    good = {"project": "shop", "broker": "kafka", "topic": "orders", "owner": "team"}
    for key, value in (("topic", 'a"b'), ("topic", "orders\n"), ("owner", ""), ("project", "x\n")):
        with pytest.raises(ValueError, match=f"Validation error for question '{key}'"):
            run_copy(
                str(REPO / "templates/scaffold"),
                str(tmp_path / key),
                data={**good, key: value},
                defaults=True,
                quiet=True,
            )
    run_copy(str(REPO / "templates/scaffold"), str(tmp_path / "ok"), data=good, defaults=True)
    assert json.loads((tmp_path / "ok/events/OrderPlaced.v1.schema.json").read_text())


def converse(args: list[str], cwd: Path, answers: list[str]) -> tuple[int, str]:
    """Run edaenv on a real terminal (a pty), typing the answers; returns exit code and screen."""
    main, child = pty.openpty()
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    env.pop("CI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edaenv", *args],
        cwd=cwd,
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
        close_fds=True,
    )
    os.close(child)
    os.write(main, "".join(f"{a}\n" for a in answers).encode())
    screen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        screen += chunk
    os.close(main)
    return proc.wait(timeout=30), screen.decode().replace("\r\n", "\n")


def test_interactive_init_asks_checks_and_asks_again(project: Path) -> None:
    code, screen = converse(
        ["init"],
        project,
        # broker, topic (refused, then the default), owner (refused twice), components
        ["nats", 'a"b', "", " ", 'x"y', "Payments Team", "bogus", "grafana"],
    )
    assert code == 0, screen
    assert "'a\"b' cannot be a topic" in screen
    assert "' ' cannot be an owner" in screen and "'x\"y' cannot be an owner" in screen
    assert "unknown component 'bogus'" in screen
    config = (project / "edaenv.yaml").read_text()
    assert "broker: nats" in config and "  grafana: false" in config
    assert "  prometheus: true" in config
    contract = contract_of(project)["x-edaenv"]
    assert (contract["topic"], contract["owner"]) == ("orders", "Payments Team")


def test_interactive_init_suggests_an_owner_never_an_empty_one(project: Path) -> None:
    code, screen = converse(["init"], project, ["", "", "", ""])
    assert code == 0, screen
    assert "Team owning the OrderPlaced contract [shop-team]" in screen
    assert contract_of(project)["x-edaenv"]["owner"] == "shop-team"
