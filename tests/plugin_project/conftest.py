"""Not collected by edaenv's own test run: the e2e tests (tests/e2e/test_faults.py,
tests/e2e/test_plugin_ownership.py) copy these test modules beside a real edaenv.yaml and run
pytest on them there, as a user's project would."""

collect_ignore_glob = ["test_*.py"]
