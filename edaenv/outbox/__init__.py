"""The transactional outbox relay, dead letters, and the helpers the sample consumer uses."""
