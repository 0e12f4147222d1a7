"""How every mixft command stops on Ctrl-C (SIGINT), SIGTERM and SIGHUP: one mechanism.

``cli.main`` runs each command inside ``handle_signals()``, whose handler raises ``Interrupted`` in the
main thread so that every cleanup on the way out runs; ``main`` then prints what was kept and how to
resume, and returns 128 + signum. Writers say what a stopped run keeps with ``keeping``; cleanup that
must finish runs inside ``shielded``; forked workers call ``worker_defaults`` (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """Raised in the main thread by a handled signal.

    A ``BaseException``, not a ``KeyboardInterrupt``: click and Typer turn a ``KeyboardInterrupt`` into
    a return value (``Exit(130)``) that loses the signal; this one passes through them to ``main``,
    which returns 128 + signum: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (what a shell reports
    for a process killed by that signal)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.kept: str | None = None  # what the interrupted command keeps; set by ``keeping``
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_shield_depth = 0
_pending: int | None = None


def _handler(signum, _frame) -> None:
    global _pending
    if _shield_depth:
        _pending = _pending or signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into ``Interrupted`` for the block (main thread only);
    the previous handlers come back afterwards (tests call ``main`` in-process). A signal the
    process was started with ignored stays ignored (``nohup``, ``&`` in a script)."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in HANDLED:
        old = signal.getsignal(sig)
        if old == signal.SIG_IGN:  # started ignoring it (nohup, a background job): keep ignoring it
            continue
        previous[sig] = old
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        _pending = None
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold handled signals until the block ends (cleanup that must finish), then raise the first:
    a second Ctrl-C cannot leave half a staging folder."""
    global _shield_depth, _pending
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        if _shield_depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


@contextlib.contextmanager
def keeping(note: str | Callable[[], str | None]) -> Iterator[None]:
    """An interruption that leaves this block reports ``note`` (a string, or a function called
    then, after the block's own cleanup): what the run keeps and how to go on. Blocks nest; the
    innermost note wins."""
    try:
        yield
    except Interrupted as e:
        if e.kept is None:
            try:
                e.kept = note() if callable(note) else note
            except (OSError, ValueError, LookupError) as err:  # a note must never hide the interruption
                e.kept = f"(could not tell what was kept: {err})"
        raise


def worker_defaults() -> None:
    """For forked worker processes that share the terminal (``prepare``'s read pass): ignore SIGINT
    (the parent decides and stops them), default SIGTERM/SIGHUP."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
