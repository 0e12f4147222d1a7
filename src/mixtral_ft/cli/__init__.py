"""The ``mixft`` command line: one module per command group, listed in ``main.COMMANDS``.

CLI modules import only typer and the standard library at the top; library code (and with
it anything heavy) is imported inside each command. A command module itself is imported only
when its command is used (``_lazy``), so ``mixft --help`` imports none of them.
"""
