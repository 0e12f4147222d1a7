"""Run a subprocess, stream its output to the terminal (stderr) and a log file, and never leave it
running when mixft stops: ``run_streaming`` (how the child is stopped), and the environment Axolotl's
processes get (``axolotl_env``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from mixtral_ft.util.interrupt import Interrupted


def axolotl_env(base_model: str | None = None, wandb: bool = False) -> dict[str, str]:
    """Environment for every Axolotl process: telemetry off; W&B off unless the config asks for it
    (``wandb``: ``--set wandb_project=...``, see ``train.tracking``); offline when the model is local."""
    env = dict(os.environ)
    env["AXOLOTL_DO_NOT_TRACK"] = "1"
    env["DO_NOT_TRACK"] = "1"
    if not wandb:
        env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if base_model and Path(base_model).is_dir():
        env["HF_HUB_OFFLINE"] = "1"  # nothing to download: fail fast instead of reaching the Hub
    return env


_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n    sys.exit(143)  # mixft died before prctl\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def guarded_command(cmd: list[str]) -> list[str]:
    """``cmd`` behind the die-with-mixft guard on Linux (``prctl(PR_SET_PDEATHSIG, SIGTERM)``); as is elsewhere."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]


def run_streaming(
    cmd: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    echo: bool = True,
    grace_s: float = 60.0,
) -> int:
    """Run ``cmd``; copy its output to ``log_path`` (appended) and to stderr; return its exit status.

    An interruption (``KeyboardInterrupt``, ``util.interrupt.Interrupted``) or any other error
    while it runs stops the child's process group, writes the end to the log, and is raised again
    once the child is gone:

    - The child runs in its own process group (its own session: the terminal's Ctrl-C reaches
      mixft only, which decides). When mixft is interrupted (Ctrl-C, SIGTERM, SIGHUP) or fails while
      streaming (e.g. a full disk for the log), the whole group gets the same signal (SIGTERM for
      SIGHUP), then SIGTERM and SIGKILL if it has not exited after ``grace_s`` seconds; a second
      interruption kills it at once.
    - On Linux the child also asks the kernel for SIGTERM when mixft dies without running any code
      (``kill -9``): ``prctl(PR_SET_PDEATHSIG)``, set by a few lines of Python that then ``exec`` the
      command (so no ``preexec_fn`` runs in a forked copy of a threaded process).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(
            guarded_command(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            _pump(proc, log, echo)
        except BaseException as e:
            sig = (
                e.signum
                if isinstance(e, Interrupted)
                else signal.SIGINT
                if isinstance(e, KeyboardInterrupt)
                else signal.SIGTERM
            )
            if sig == signal.SIGHUP:
                sig = signal.SIGTERM
            try:
                _stop(proc, log, echo, grace_s, sig)
            except BaseException:  # a second interruption: no more waiting
                _kill(proc)
            rc = proc.wait()
            _signal_group(proc, signal.SIGKILL)  # anything of its group still alive (workers) goes too
            with contextlib.suppress(OSError):
                log.write(f"\n[mixft] exit status {rc} (stopped: {type(e).__name__} {e})\n".encode())
            raise
        finally:
            if proc.poll() is None:
                _kill(proc)
        rc = proc.wait()
        log.write(f"\n[mixft] exit status {rc}\n".encode())
    return rc


def _pump(proc: subprocess.Popen, log, echo: bool, deadline: float | None = None) -> None:
    """Copy the child's output until it closes (or until ``deadline``, a ``time.monotonic`` value)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = sys.stderr.buffer if echo else None
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        if out is not None:
            try:
                out.write(chunk)
                out.flush()
            except OSError:  # the terminal went away (SIGHUP): the log still gets everything
                out = None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen, log, echo: bool, grace_s: float, sig: int = signal.SIGINT) -> None:
    """Send ``sig`` to the child's group and keep copying its output (so it never blocks on a full
    pipe) for up to ``grace_s`` seconds; then SIGTERM, then SIGKILL."""
    _signal_group(proc, sig)
    with contextlib.suppress(OSError):
        _pump(proc, log, echo, deadline=time.monotonic() + grace_s)
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    _signal_group(proc, signal.SIGKILL)
    proc.wait()
