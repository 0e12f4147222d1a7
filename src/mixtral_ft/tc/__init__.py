"""Truth-checker (TC): the verdict format, the TC prompt, and `prepare tc`."""
