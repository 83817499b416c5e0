"""Not collected by edaenv's own test run: tests/e2e/test_faults.py copies test_with_edaenv.py
beside a real edaenv.yaml and runs pytest on it there, as a user's project would."""

collect_ignore = ["test_with_edaenv.py"]
