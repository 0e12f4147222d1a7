"""One exclusive lock per output: two mixft processes never write the same file, folder or run.

Every writer of a resumable output, a run directory or an output folder holds ``output_lock(target)`` for
as long as it writes; a second process refuses at once, naming the holder (``LockedError``, exit 75).
How the lock is taken and why it is safe: :class:`OutputLock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixtral_ft.errors import LockedError, NoSpaceError
from mixtral_ft.util.provenance import command_line, now_iso


def lock_path(target: str | os.PathLike) -> Path:
    """``gens/ft.jsonl`` -> ``gens/.ft.jsonl.lock``; ``runs/rg`` -> ``runs/.rg.lock`` (parent resolved)."""
    target = Path(os.path.abspath(target))
    return target.parent.resolve() / f".{target.name}.lock"


def _holder_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not recorded itself yet)"
    command = " ".join(str(a) for a in info.get("command") or []) or "?"
    return f"pid {info.get('pid')} on {info.get('host')} ({command}), since {info.get('started')}"


def read_holder(target: str | os.PathLike) -> dict[str, Any] | None:
    """What the current (or last) holder of ``target``'s lock recorded, or None."""
    try:
        data = json.loads(lock_path(target).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class OutputLock:
    """An exclusive, non-blocking lock on one output path.

    The lock is ``flock(LOCK_EX)`` on a hidden sibling, ``PARENT/.NAME.lock`` (a sibling, not a file
    inside: a folder output is replaced by a rename, and the lock must outlive that). The holder writes
    its pid, host, command and start time into the file; a second process does not wait.

    - The kernel drops the lock when its holder dies, however it dies (``kill -9`` included), so a
      stale lock file never blocks a later run: the next holder simply takes it over.
    - On release the file is removed while still locked; a process that opened the old file
      meanwhile sees that its inode is gone and opens the new one (no two holders, no lost lock).
    - ``flock`` works on local filesystems and on NFS (Linux maps it onto NFS byte-range locks);
      on a filesystem without locking the acquire fails with the OS's error.
    """

    def __init__(self, target: str | os.PathLike, what: str = "output"):
        self.target = Path(target)
        self.path = lock_path(target)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``LockedError`` naming the holder (``NoSpaceError`` when even the
        lock file cannot be written)."""
        try:
            self._acquire()
        except OSError as e:
            if NoSpaceError.matches(e):
                raise NoSpaceError(self.target, kept="nothing was written") from None
            raise

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                info = None
                for _ in range(20):  # the holder writes its record just after locking
                    info = read_holder(self.target)
                    if info:
                        break
                    time.sleep(0.05)
                raise LockedError(
                    f"{self.target}: in use by {_holder_text(info)}: another mixft run is writing "
                    f"this {self.what}; wait for it to finish (or stop it), then run again"
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed this file as we opened it: take the new one
        else:  # pragma: no cover - would need 100 holders in a row releasing under us
            raise LockedError(f"{self.target}: could not take its lock {self.path}")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(), "started": now_iso()}
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        self._fd = fd  # held from here: release() removes the file even if the record cannot be written
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def output_lock(target: str | os.PathLike, what: str = "output") -> Iterator[OutputLock]:
    """Hold ``target``'s lock for the block; a second holder gets ``LockedError`` at once."""
    lock = OutputLock(target, what)
    try:
        lock.acquire()
    except BaseException:
        lock.release()
        raise
    try:
        yield lock
    finally:
        lock.release()
