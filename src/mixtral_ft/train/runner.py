"""Run a subprocess, stream its output to the terminal (stderr) and a log file, forward Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


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


def run_streaming(cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None, echo: bool = True, grace_s: float = 60.0) -> int:
    """Run ``cmd``; copy its output to ``log_path`` (appended) and to stderr; return its exit status.

    On Ctrl-C the child's process group gets SIGINT (Axolotl/HF Trainer stop cleanly), then
    SIGTERM and SIGKILL if it has not exited after ``grace_s`` seconds; the return value is 130.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        interrupted = False
        try:
            _pump(proc, log, echo)
        except KeyboardInterrupt:
            interrupted = True
            _stop(proc, grace_s)
            try:
                _pump(proc, log, echo)
            except KeyboardInterrupt:
                _kill(proc)
        rc = proc.wait()
        log.write(f"\n[mixft] exit status {rc}{' (interrupted)' if interrupted else ''}\n".encode())
    return 130 if interrupted else rc


def _pump(proc: subprocess.Popen, log, echo: bool) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = sys.stderr.buffer if echo else None
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        if out is not None:
            out.write(chunk)
            out.flush()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    _signal_group(proc, signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    _signal_group(proc, signal.SIGKILL)
    proc.wait()
