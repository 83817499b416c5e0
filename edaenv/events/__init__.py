"""Event contracts, the CloudEvents envelope and generated test data."""
