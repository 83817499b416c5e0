"""Stack generation: the user-owned scaffold (copier) and the rendered compose file."""
