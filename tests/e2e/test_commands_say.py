"""Commands say what actually happened (issue: every command says what actually happened)."""

from __future__ import annotations

from tests.e2e.conftest import MakeStack


def test_logs_of_a_stack_that_is_not_up_says_so(make_stack: MakeStack) -> None:
    """It printed nothing and exited 0, as if the services had nothing to say."""
    stack = make_stack("nats", ())
    assert stack.edaenv("render").code == 0
    result = stack.edaenv("logs")
    assert (result.code, result.out, result.err) == (
        1,
        "",
        f"error: stack '{stack.project}' has no container, so no logs\n"
        "  hint: start it with `edaenv up`; `edaenv status` shows what runs\n",
    )
    stack.up("--timeout", "120")
    assert stack.edaenv("logs", "--tail", "5").code == 0


def test_down_rmi_removes_the_images_up_built_and_no_other(
    make_stack: MakeStack, stack_images: dict[str, str]
) -> None:
    """`down` left the built relay/consumer images behind, one pair per project, for good."""
    import json

    stack = make_stack("nats", ("postgres", "outbox"))
    stack.up("--timeout", "180", timeout=600)
    built = f"{stack.project}-relay:dev"
    assert stack.client.images.list(name=built)
    result = stack.edaenv("down", "--rmi", "--json")
    assert result.code == 0, result.text
    assert json.loads(result.out) == {
        "project": stack.project,
        "containers_removed": 3,
        "volumes_deleted": None,
        "images_removed": [built],
    }
    assert not stack.client.images.list(name=built)
    for image in stack_images.values():  # the pulled (here: stand-in) images stay
        assert stack.client.images.get(image)
