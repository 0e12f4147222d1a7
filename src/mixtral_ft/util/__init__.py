"""Small shared pieces: atomic writes, hashing, provenance manifests, progress bars, JSONL."""
