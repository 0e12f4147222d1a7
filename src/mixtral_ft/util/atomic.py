"""Atomic outputs: a reader never sees a half-written file or directory, and no writer destroys
what it must not.

``atomic_file`` writes a temporary sibling and renames it into place; ``staged_dir`` builds a folder of
outputs in a hidden staging sibling and renames it as a whole, holding the output's lock;
``guard_destination`` is the one check every writer makes before it writes or deletes anything; a full
disk becomes ``NoSpaceError`` after the partial output is removed (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mixtral_ft.errors import NoSpaceError, UsageError, format_bytes
from mixtral_ft.util.interrupt import keeping, shielded
from mixtral_ft.util.lock import output_lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    with atomic_file(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary sibling of ``path`` for writing; rename it into place on success.

    On any failure the temporary file is removed and ``path`` is untouched; a full disk is
    reported as ``NoSpaceError`` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with shielded():
            written = _size(Path(tmp))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if NoSpaceError.matches(e):
            raise NoSpaceError(path, needed=written or None, at_least=True) from None
        raise


def check_output_dir(out: str | os.PathLike, force: bool) -> Path:
    """Refuse to clobber an existing output directory unless ``force``."""
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out}: output directory already exists; use --force to replace it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    return out


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def guard_destination(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out"
) -> Path:
    """Refuse an output that writing (or ``--force`` replacing) would destroy something with.

    ``out`` may not be, or contain, any of ``inputs`` (files or folders the command reads), and
    may not be the working directory, one of its parents, the home folder or ``/``. Paths are
    compared after resolving symlinks (and by inode when both exist), so ``./x``, ``x/`` and a
    link to ``x`` are one place. Returns ``out`` unchanged."""
    target = _resolved(out)
    cwd = Path.cwd().resolve()
    shown = str(out)
    if target == cwd or target in cwd.parents:
        raise UsageError(
            f"{option} {shown}: is the working directory or one of its parents; mixft never replaces "
            f"it. Choose a new folder, e.g. {option} {Path(shown) / 'out'}"
        )
    home = Path.home().resolve()
    if target == home or target == Path(target.anchor):
        raise UsageError(
            f"{option} {shown}: is {'your home folder' if target == home else 'the root folder'}; "
            "choose a new folder for the output"
        )
    for item in inputs:
        if item is None:
            continue
        source = _resolved(item)
        same = source == target
        if not same and target.exists() and source.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(target, source)
        if same or target in source.parents:
            what = "is" if same else "contains"
            raise UsageError(
                f"{option} {shown}: {what} the input {item}; mixft never deletes or overwrites its "
                f"inputs. Choose another {option}"
            )
    return Path(out)


def _size(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder); 0 when it is gone."""
    try:
        if path.is_file():
            return path.stat().st_size
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
        return total
    except OSError:
        return 0


def leftovers(out: str | os.PathLike) -> list[Path]:
    """Staging folders, replaced-output trash and temporary files that earlier writers of ``out``
    left beside it (``.OUT.staging-*``, ``.OUT.old-*``, ``.OUT.*.tmp``)."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    name = out.name
    found = []
    for p in out.parent.iterdir():
        n = p.name
        if n.startswith((f".{name}.staging-", f".{name}.old-")) or (n.startswith(f".{name}.") and n.endswith(".tmp")):
            found.append(p)
    return sorted(found)


def _pid_of(leftover: Path) -> int | None:
    """The writer's pid recorded in a leftover's name (None for names of older mixft versions)."""
    tail = leftover.name.rsplit(".staging-", 1)[-1].rsplit(".old-", 1)[-1]
    head = tail.rsplit(".", 2)[-2] if leftover.name.endswith(".tmp") else tail
    head = head.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def remove_leftovers(out: str | os.PathLike) -> list[str]:
    """Remove what ``leftovers(out)`` finds and say so on stderr; the caller holds ``out``'s lock,
    so no live mixft process owns any of it. Returns the names removed."""
    found = leftovers(out)
    if not found:
        return []
    total = 0
    names = []
    with shielded():
        for p in found:
            total += _size(p)
            pid = _pid_of(p)
            names.append(p.name + (f" (pid {pid})" if pid else ""))
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    print(
        f"note: removed {len(found)} leftover(s) of interrupted runs beside {out} ({format_bytes(total)}): "
        + ", ".join(names),
        file=sys.stderr,
    )
    return names


@contextlib.contextmanager
def staged_dir(
    out: str | os.PathLike,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    needed: int | None = None,
) -> Iterator[Path]:
    """Yield a staging directory that replaces ``out`` only if the block succeeds.

    Before anything is written: ``guard_destination(out, inputs)``, the lock on ``out``
    (``LockedError`` if another run holds it), and removal of leftovers of earlier interrupted
    runs. The staging directory is a hidden sibling of ``out`` (same filesystem, so the final
    rename is atomic). On any error or signal it is removed and ``out`` is untouched; a full disk
    is reported as ``NoSpaceError`` with ``needed`` (the caller's estimate of the whole output's
    size, when it has one). One left by a process that could not run code (``kill -9``, a power
    cut) is removed by the next run of the same output, which holds the lock and so knows no live
    writer owns it. Staging and temporary names carry the writer's pid:
    ``.OUT.staging-<pid>-<random>``, ``.NAME.<pid>-<random>.tmp``."""
    out = Path(out)
    guard_destination(out, inputs)
    check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    existed = out.exists()
    kept = (
        f"{out} is unchanged (the new output was not finished); run the same command again"
        if existed
        else f"nothing was written to {out}; run the same command again"
    )
    renamed: list[bool] = []  # a signal held during the final rename arrives after it: the output is whole

    def note() -> str:
        return f"{out} was written completely just before the signal" if renamed else kept

    written = 0
    try:
        with output_lock(out, "output folder"), keeping(note):
            remove_leftovers(out)
            check_output_dir(out, force)  # again, now that we hold it
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
            # mkdtemp makes the directory private (0700); the final output gets the usual umask mode.
            os.chmod(stage, 0o777 & ~_umask())
            try:
                yield stage
                with shielded():
                    if out.exists():
                        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
                        os.replace(out, trash / "old")
                        os.replace(stage, out)
                        shutil.rmtree(trash, ignore_errors=True)
                    else:
                        os.replace(stage, out)
                    renamed.append(True)
            except BaseException as e:
                with shielded():
                    if NoSpaceError.matches(e) or isinstance(e, NoSpaceError):
                        written = _size(stage)
                    shutil.rmtree(stage, ignore_errors=True)
                raise
    except (OSError, NoSpaceError) as e:
        if not (NoSpaceError.matches(e) or isinstance(e, NoSpaceError)):
            raise
        raise NoSpaceError(
            out, needed=needed or written or None, at_least=needed is None, kept=kept.split(";")[0]
        ) from None
