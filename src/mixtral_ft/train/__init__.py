"""Training runs: run directory, preflight checks, the Axolotl launch command, the subprocess runner."""
