"""``python -m mixtral_ft.cli``: the ``mixft`` executable (``cli.entry``)."""

from mixtral_ft.cli.entry import entrypoint

entrypoint()
