"""One stage = one ``mixft`` process: the command the CLI hands the runner
(``RunRequest.mixft``: this Python running the ``mixft`` executable's entry point) and the stage's
arguments, with the terminal's stdout and stderr, so its own progress bars and messages show as
when it is run by hand.

- It runs in its own session: the terminal's Ctrl-C reaches the runner only, which passes the
  signal on (once; a second one too, and the command decides, as it does for a second Ctrl-C by
  hand; a third one kills the stage's process group). The runner then waits for the stage to
  finish its own cleanup and report what it kept.
- It dies with the runner (``kill -9`` of the runner included): the die-with-parent guard of
  ``mixft train``'s Axolotl launcher (``train.runner.guarded_command``).
- Its exit status is the stage's: a failure's message is the command's own.
"""

from __future__ import annotations

import os
import signal
import subprocess

from mixtral_ft.train.runner import guarded_command
from mixtral_ft.util.interrupt import Interrupted


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def run_stage_process(command: list[str], env: dict[str, str]) -> tuple[int, Interrupted | None]:
    """Run ``command`` (``mixft ARGV``); return its exit status (128 + N when a signal N ended it) and the first
    interruption the runner received meanwhile (None when there was none)."""

    proc = subprocess.Popen(guarded_command(command), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    received: list[Interrupted] = []
    while True:
        try:
            rc = proc.wait()
            break
        except Interrupted as e:
            received.append(e)
            _signal_group(proc.pid, e.signum if len(received) < 3 else signal.SIGKILL)
    if rc < 0:  # ended by a signal it did not handle (SIGKILL, the kernel's OOM killer)
        rc = 128 - rc
    return rc, (received[0] if received else None)


def capture(command: list[str], env: dict[str, str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """``command`` (``mixft ARGV``) with its output captured (``mixft plan --json``); a signal stops it with the runner."""

    return subprocess.run(
        guarded_command(command),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
