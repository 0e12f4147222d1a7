"""The ``mixft`` executable: it takes over Ctrl-C, SIGTERM and SIGHUP before anything heavy is
imported, so a signal while the CLI is still loading also ends in one line and exit 128 + N
(``util.interrupt``), not in a ``KeyboardInterrupt`` traceback or a silent kill."""

from __future__ import annotations

import sys


def entrypoint() -> None:
    from mixtral_ft.util.interrupt import Interrupted, handle_signals  # the standard library only

    with handle_signals():
        try:
            from mixtral_ft.cli.main import entrypoint as run

            run()
        except Interrupted as e:  # before `main` took over (loading), or after it let go
            sys.stderr.write(f"interrupted ({e.signal_name}): {e.kept or 'nothing was written'}\n")
            sys.stderr.flush()
            sys.exit(e.exit_code)


if __name__ == "__main__":
    entrypoint()
