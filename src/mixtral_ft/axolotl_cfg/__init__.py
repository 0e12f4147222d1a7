"""Axolotl configs: render base + hardware profile + overrides, check keys, validate with Axolotl."""
