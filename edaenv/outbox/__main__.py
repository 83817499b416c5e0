"""The stack's relay container: `python -m edaenv.outbox`, configured by the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edaenv.errors import EdaenvError
from edaenv.outbox.relay import Options
from edaenv.outbox.runtime import from_env
from edaenv.outbox.service import run_relay


def main() -> None:
    try:
        options = Options(
            batch_size=int(os.environ.get("EDAENV_RELAY_BATCH_SIZE", "500")),
            retention=float(os.environ.get("EDAENV_RELAY_RETENTION_SECONDS", str(24 * 3600))),
        )
        run_relay(from_env(), Path(os.environ.get("EDAENV_EVENTS_DIR", "events")), options)
    except EdaenvError as exc:
        print(f"error: {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
