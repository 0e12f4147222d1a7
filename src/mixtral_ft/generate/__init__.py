"""``mixft generate``: RG responses for a prepared test split, resumable, with a manifest."""
