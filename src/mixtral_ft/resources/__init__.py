"""Data files shipped inside the package (JSON Schemas)."""
