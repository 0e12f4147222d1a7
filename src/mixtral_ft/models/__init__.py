"""Local models: a tiny random Mixtral for tests, demos and CI (no network)."""
