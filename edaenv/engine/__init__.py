"""The stack's lifecycle on a Docker engine: one `docker compose` subprocess wrapper (compose.py),
the Docker SDK for what Compose does not report (status.py), checks before anything starts
(preflight.py) and the host's view of the endpoints (endpoints.py)."""
