"""A full disk for one process, injected at the write layer (tests only).

Put this folder first on ``PYTHONPATH`` and set ``MIXFT_FAULT_FULL_DIR=DIR`` and
``MIXFT_FAULT_FULL_BYTES=N`` (and, optionally, ``MIXFT_FAULT_FULL_NAME=FILE`` to count only
writes to files of that name): every file opened for writing under ``DIR`` goes through a
``FileIO`` whose ``write`` behaves like the kernel's on a filesystem that had ``N`` bytes free
for this process: short writes, then ``OSError(ENOSPC)``. Everything above it (buffering,
text encoding, ``fsync``, ``os.replace``) is Python's own. Used where mounting a real small
filesystem is not permitted (CI containers); the tests run both when they can.
"""

from __future__ import annotations

import builtins
import errno
import io
import os

_DIR = os.environ.get("MIXFT_FAULT_FULL_DIR")
_NAME = os.environ.get("MIXFT_FAULT_FULL_NAME")  # only this file name counts (e.g. the resumable output)
_LEFT = [int(os.environ.get("MIXFT_FAULT_FULL_BYTES", "0"))]

if _DIR:
    _DIR = os.path.realpath(_DIR)
    _real_open = io.open

    class _FullFileIO(io.FileIO):
        def write(self, b):
            data = memoryview(b).cast("B")
            if _LEFT[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = min(len(data), _LEFT[0])
            written = super().write(data[:n])
            _LEFT[0] -= written
            return written

    def _target(file) -> str | None:
        try:
            if isinstance(file, int):
                return os.readlink(f"/proc/self/fd/{file}")
            return os.path.realpath(os.fspath(file))
        except (OSError, TypeError):
            return None

    def _open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
        writing = any(c in mode for c in "wax+")
        path = _target(file) if writing else None
        if not path or not path.startswith(_DIR + os.sep) or (_NAME and os.path.basename(path) != _NAME):
            return _real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        raw_mode = "".join(c for c in mode if c in "rwax+")
        raw = _FullFileIO(file, raw_mode, closefd=closefd, opener=opener)
        buffered = (io.BufferedRandom if "+" in mode else io.BufferedWriter)(raw)
        if "b" in mode:
            return buffered
        text = io.TextIOWrapper(buffered, encoding or "utf-8", errors, newline, line_buffering=buffering == 1)
        text.mode = mode
        return text

    io.open = _open
    builtins.open = _open
