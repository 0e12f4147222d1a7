"""Free memory of a CUDA device, read without a CUDA context in this process.

A CUDA context in mixft's process would hold memory on every card for the whole run and, in
``EXCLUSIVE_PROCESS`` mode, keep Axolotl's ranks off the GPU. So the free memory is read through NVML
(``pynvml``); where NVML cannot answer for a device CUDA can use, by a short-lived child process; with
neither an NVIDIA driver nor a loadable ``libcuda`` there is no device (None). Why each step:
docs/design/planner.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

# What the child runs: the free bytes of device argv[1], or "none" when CUDA has no such device.
_CHILD = (
    "import sys, torch\n"
    "d = int(sys.argv[1])\n"
    "ok = torch.cuda.is_available() and d < torch.cuda.device_count()\n"
    "print(torch.cuda.mem_get_info(d)[0] if ok else 'none')\n"
)
CHILD_TIMEOUT_S = 120


class _AskChild(Exception):
    """NVML cannot say (the message says why); a child process with CUDA can."""


def free_bytes(device: int) -> int | None:
    """Free bytes of CUDA device ``device`` (a CUDA ordinal, after ``CUDA_VISIBLE_DEVICES``), or None
    when there is no such device. Never initialises CUDA in this process."""
    try:
        return nvml_free_bytes(device)
    except _AskChild as why:
        log.debug("mixft: NVML cannot read device %d (%s); asking a child process", device, why)
        return child_free_bytes(device)


def libcuda_loadable() -> bool:
    """Whether the CUDA driver library loads (loading it initialises nothing: no ``cuInit``)."""
    name = "nvcuda.dll" if sys.platform.startswith("win") else "libcuda.so.1"
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def nvml_free_bytes(device: int) -> int | None:
    """NVML's free bytes of ``device``; None without an NVIDIA driver; :class:`_AskChild` where NVML
    cannot answer but CUDA may."""
    try:
        import pynvml
    except ImportError:
        if libcuda_loadable():
            raise _AskChild("nvidia-ml-py is not installed") from None
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        if libcuda_loadable():
            raise _AskChild(f"NVML: {e}") from None
        return None  # no NVML and no CUDA driver: no NVIDIA GPU here
    try:
        order = visible_nvml_indices(pynvml)
        if device >= len(order):
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(order[device])
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except pynvml.NVMLError as e:
        raise _AskChild(f"NVML: {e}") from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_nvml_indices(pynvml) -> list[int]:
    """NVML indices of the CUDA devices this process sees, in CUDA order (``CUDA_VISIBLE_DEVICES``
    parsed as torch parses it, ``torch/cuda/__init__.py``, ``_parse_visible_devices``: the list stops
    at the first entry that names no device, and a repeated one leaves none)."""
    count = pynvml.nvmlDeviceGetCount()
    if os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        # CUDA's default order is fastest first; NVML's is the PCI bus order. They agree when the GPUs are alike.
        names = {_text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
        if len(names) > 1:
            raise _AskChild(f"GPUs of different models ({', '.join(sorted(names))}) in CUDA's fastest-first order")
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    entries = [e.strip() for e in raw.split(",")]
    if entries[0].startswith("MIG-"):
        raise _AskChild("MIG devices")
    uuids = None
    if entries[0].startswith("GPU-"):
        uuids = [_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    out: list[int] = []
    for entry in entries:
        index = _uuid_index(entry, uuids) if uuids is not None else _ordinal(entry)
        if index is None or index >= count:
            break
        if index in out:
            return []
        out.append(index)
    return out


def _ordinal(entry: str) -> int | None:
    """The leading digits of ``entry`` (``strtoul``-like, as CUDA reads ``CUDA_VISIBLE_DEVICES``)."""
    digits = ""
    for c in entry:
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else None


def _uuid_index(entry: str, uuids: list[str]) -> int | None:
    """The one device whose UUID starts with ``entry``; None when none or several do."""
    hits = [i for i, u in enumerate(uuids) if u.startswith(entry)]
    return hits[0] if len(hits) == 1 else None


def child_free_bytes(device: int) -> int | None:
    """``torch.cuda.mem_get_info(device)`` in a child process (its CUDA context goes with it); None
    when the child finds no such device or fails (then the run goes on without the memory check)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(device)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("mixft: could not read the free memory of CUDA device %d (%s)", device, e)
        return None
    lines = done.stdout.strip().splitlines()
    last = lines[-1].strip() if lines else ""
    if done.returncode == 0 and last == "none":
        return None
    if done.returncode == 0 and last.isdigit():
        return int(last)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    log.warning("mixft: could not read the free memory of CUDA device %d (%s)", device, tail)
    return None
