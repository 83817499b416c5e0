"""CI isolation on a real engine: `ci prepare`'s variables move a run to another project name
and port offset without touching the committed compose file."""

from __future__ import annotations

import json
import subprocess

from tests.e2e.conftest import MakeStack, claim_offset


def test_an_isolated_up_runs_its_own_copy_and_leaves_the_committed_file(
    make_stack: MakeStack,
) -> None:
    stack = make_stack("nats", ())
    git = ["git", "-C", str(stack.root), "-c", "user.name=t", "-c", "user.email=t@t"]
    assert stack.edaenv("render").code == 0  # after the fixture's `images:` edit
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "scaffold"], check=True)
    committed = (stack.scaffold / "compose.yaml").read_bytes()
    offset, slot = claim_offset()
    variables: dict[str, str] = {}
    try:
        prepared = stack.edaenv("ci", "prepare", "--unique", "--port-offset", str(offset))
        assert prepared.code == 0, prepared.text
        variables = dict(line.split("=", 1) for line in prepared.out.splitlines())
        isolated = variables["EDAENV_PROJECT"]
        assert isolated.startswith(f"{stack.project}-")

        up = stack.edaenv("up", "--timeout", "120", env=variables)
        assert up.code == 0, up.text
        running = stack.client.containers.list(
            filters={"label": f"com.docker.compose.project={isolated}"}
        )
        assert [c.labels["com.docker.compose.service"] for c in running] == ["broker"]
        assert stack.containers() == []  # nothing under the committed project name
        env = stack.edaenv("env", "--json", env=variables)
        assert f":{4222 + offset}" in json.loads(env.out)["EDAENV_BROKER_URL"]

        assert (stack.scaffold / "compose.yaml").read_bytes() == committed
        status = subprocess.run(
            ["git", "-C", str(stack.root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert status.stdout == ""  # the copy and its record live in the git-ignored .generated
        assert stack.edaenv("render", "--check", env=variables).code == 0
        down = stack.edaenv("down", "--volumes", env=variables)
        assert down.code == 0, down.text
        assert not stack.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={isolated}"}
        )
    finally:
        subprocess.run(
            [
                "docker",
                "compose",
                "--project-name",
                variables.get("EDAENV_PROJECT", "-"),
                "down",
                "--volumes",
                "--timeout",
                "2",
            ],
            capture_output=True,
        )
        slot.unlink(missing_ok=True)


def test_the_nats_password_is_in_no_argv_and_any_password_works(make_stack: MakeStack) -> None:
    """The password was on nats-server's command line (`ps`, `docker inspect`); it now comes
    from a rendered config file, which must carry a .env value exactly: "10KB" unquoted would
    be a size (10240) in NATS config syntax."""
    stack = make_stack("nats", ())
    env_file = stack.scaffold / ".env"
    password = "10KB"
    env_file.write_text(
        "".join(
            f"NATS_PASSWORD={password}\n" if line.startswith("NATS_PASSWORD=") else line + "\n"
            for line in env_file.read_text().splitlines()
        )
    )
    stack.up("--timeout", "120")
    [broker] = stack.containers()
    shown = json.dumps([broker.attrs["Args"], broker.attrs["Config"]["Cmd"], broker.attrs["Path"]])
    assert "--pass" not in shown and password not in shown
    top = broker.top(ps_args="-eo pid,args")  # what `ps` on the host shows
    assert not any(password in " ".join(row) for row in top["Processes"]), top
    conf = stack.scaffold / ".generated" / "nats" / "nats.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    seeded = stack.edaenv("seed", "OrderPlaced", "-n", "3", "--json")
    assert seeded.code == 0, seeded.text
    assert json.loads(seeded.out)["acknowledged"] == 3
