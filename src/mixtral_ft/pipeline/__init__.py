"""Pipelines of mixft commands (``mixft run``, docs/pipelines.md): a YAML file of stages, each a
mixft command with its arguments, run in order in its own process; up-to-date stages skipped,
stopped ones continued, one runner per output folder.

- ``schema``: reading and checking the file (``FILE:LINE`` for every problem);
- ``commands``: what the runner knows of each command (inputs, outputs, how it finished);
- ``resolve``: variables, presets, substitution, the dependency graph;
- ``state``: the runner's record of an output folder, and input hashing;
- ``decide``: up to date or not, and how a stage runs again;
- ``child``: one stage, one process; ``plancheck``: ``mixft plan`` per stage;
- ``runner``: ``mixft run``; ``show``: ``--dry-run``, ``--status``, ``--plan``.

This package never imports typer: the CLI (``cli/run_cmd.py``) hands it the command parser's
check as a function.
"""

DEMO_PIPELINE = "demo-cpu"  # the shipped pipeline `mixft demo` runs
