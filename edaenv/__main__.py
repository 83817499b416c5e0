"""`python -m edaenv` and the `edaenv` command (pyproject.toml's script)."""

from __future__ import annotations

import sys


def main() -> None:
    # Answered before typer is imported: loading it is most of the CLI's start-up (~45 ms).
    if sys.argv[1:] == ["--version"]:
        from edaenv import __version__

        print(f"edaenv {__version__}")
        return
    from edaenv.cli.app import main as run

    run()


if __name__ == "__main__":
    main()
