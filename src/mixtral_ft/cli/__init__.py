"""The ``mixft`` command line: one module per command group, wired together in ``main``.

CLI modules import only typer and the standard library at the top; library code (and with
it anything heavy) is imported inside each command, so ``mixft --help`` stays fast.
"""
