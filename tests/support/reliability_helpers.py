"""Real ``mixft`` processes for the reliability tests and ``scripts/fault_injection.py``: start
them, wait for a point in their run, signal them, look at what they left."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from support.offline_env import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
FAULTS = REPO / "tests" / "faults"


def mixft_env(extra: dict[str, str] | None = None, full_disk: tuple[Path, int] | None = None) -> dict[str, str]:
    """The environment of a child ``mixft``: this checkout first on the path, offline, no bars;
    ``full_disk=(DIR, N)`` injects a full disk under DIR after N bytes (tests/faults)."""
    env = dict(os.environ)
    paths = ([str(FAULTS)] if full_disk else []) + [str(SRC), env.get("PYTHONPATH", "")]
    if full_disk:
        env["MIXFT_FAULT_FULL_DIR"] = str(full_disk[0])
        env["MIXFT_FAULT_FULL_BYTES"] = str(full_disk[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(OFFLINE_ENV, MIXFT_PROGRESS="0")
    env.update(extra or {})
    return env


def mixft_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "mixtral_ft.cli", *map(str, args)]


def start(args: list[str], cwd: Path, **env_kw) -> subprocess.Popen:
    """``mixft ARGS`` as a child process (its own stdout/stderr pipes)."""
    return subprocess.Popen(
        mixft_cmd(args), cwd=cwd, env=mixft_env(**env_kw), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run(args: list[str], cwd: Path, timeout: float = 600, **env_kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        mixft_cmd(args), cwd=cwd, env=mixft_env(**env_kw), capture_output=True, text=True, timeout=timeout
    )


def wait_until(
    check: Callable[[], bool], timeout: float = 300, proc: subprocess.Popen | None = None, what: str = "the condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}; stderr: {err[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lock_held(target: Path) -> bool:
    """Someone holds ``target``'s lock and has recorded itself."""
    from mixtral_ft.util.lock import lock_path

    p = lock_path(target)
    try:
        return bool(json.loads(p.read_text() or "null"))
    except (OSError, ValueError):
        return False


def stop(proc: subprocess.Popen, sig: int, timeout: float = 120) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def process_table() -> list[tuple[int, int, str]]:
    """``(pid, ppid, command line)`` of every live process (from /proc)."""
    rows = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        rows.append((int(d.name), ppid, cmdline))
    return rows


def descendants(pid: int) -> list[tuple[int, str]]:
    table = process_table()
    out: list[tuple[int, str]] = []
    frontier = {pid}
    while frontier:
        kids = [(p, c) for p, pp, c in table if pp in frontier]
        out += kids
        frontier = {p for p, _ in kids}
    return out


def alive(pids: list[int]) -> list[int]:
    """The pids still running (zombies count as gone)."""
    live = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.append(pid)
    return live


def leftovers(out: Path) -> list[str]:
    """Hidden siblings an interrupted writer of ``out`` could leave (staging, trash, temp files)."""
    return sorted(
        p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")
    )


def write_qa(path: Path, n: int, start: int = 0) -> Path:
    """``n`` raw Q&A rows (about 300 bytes each) for ``prepare rg``."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(start, start + n):
            fh.write(
                json.dumps(
                    {
                        "id": f"q{i}",
                        "question": f"What is item {i}?",
                        "context": f"Item {i} is described here. " * 8,
                        "answer": f"It is item {i}.",
                    }
                )
                + "\n"
            )
    return path


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """A real TCP listener on loopback that accepts connections and never answers: an endpoint
    that hangs, so a ``--backend openai`` run stays busy until it is stopped. Yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    conns = []
    stop_flag = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop_flag.is_set():
            try:
                conn, _ = sock.accept()
                conns.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        stop_flag.set()
        t.join(2)
        for c in conns:
            c.close()
        sock.close()


def hold_lock(target: Path, cwd: Path) -> subprocess.Popen:
    """A separate process that holds ``target``'s output lock (as a long run of another command
    would) until killed; returns once it holds it."""
    code = (
        "import sys, time\nfrom mixtral_ft.util.lock import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], cwd=cwd, env=mixft_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a real small tmpfs at ``path``; False where that is not permitted (not root, or a
    container without mount rights)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(mnt: Path, leave: int) -> None:
    """Fill the filesystem of ``mnt`` until about ``leave`` bytes are free."""
    import shutil

    free = shutil.disk_usage(mnt).free
    if free > leave:
        with open(mnt / "filler", "wb") as fh:
            fh.write(b"\0" * (free - leave))
