"""The plan check reads the GPUs' free memory without a CUDA context in mixft's process: through NVML
(a stand-in ``pynvml`` here), else a short-lived child process; ``torch.cuda`` is never initialised."""

from __future__ import annotations

import sys
import types

import pytest

from mixtral_ft.plan import freemem
from mixtral_ft.plan.check import FREE_GIB_ENV, PlanRefused, free_gpu_memory_gib, preflight_training

GIB = 2**30


class FakeNVML(types.ModuleType):
    """What ``nvidia-ml-py`` offers the probe, over a list of (name, uuid, free GiB) devices."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's name
        pass

    def __init__(self, devices, init_error=None):
        super().__init__("pynvml")
        self.devices = devices
        self.init_error = init_error
        self.initialised = 0
        self.asked: list[int] = []

    def nvmlInit(self):  # noqa: N802 - pynvml's names below
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < len(self.devices):
            raise self.NVMLError("Invalid Argument")
        return i

    def nvmlDeviceGetName(self, h):
        return self.devices[h][0]

    def nvmlDeviceGetUUID(self, h):
        return self.devices[h][1].encode()  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetMemoryInfo(self, h):
        self.asked.append(h)
        return types.SimpleNamespace(free=int(self.devices[h][2] * GIB), total=80 * GIB, used=0)


H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def no_cuda_init(monkeypatch):
    """Any attempt to initialise CUDA in this process fails the test."""
    torch = pytest.importorskip("torch")

    def forbidden(*a, **k):
        raise AssertionError("CUDA was initialised in mixft's process")

    for name in ("_lazy_init", "cudart", "mem_get_info", "init"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    monkeypatch.setattr(torch._C, "_cuda_init", forbidden, raising=False)
    monkeypatch.delenv(FREE_GIB_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    yield torch
    assert not torch.cuda.is_initialized()


def _nvml(monkeypatch, devices, init_error=None) -> FakeNVML:
    fake = FakeNVML(devices, init_error)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def _rendered(task: str, profile: str) -> dict:
    from mixtral_ft.axolotl_cfg.keys import snapshot_keys
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    req = RenderRequest(task=task, data_dir="/data/prepared", profile=profile, run_dir="/runs/plan")
    return render(req, keys=snapshot_keys()).values


def test_training_preflight_reads_nvml_and_never_initialises_cuda(no_cuda_init, monkeypatch, warm_cache):
    nvml = _nvml(monkeypatch, [(H100, "GPU-aaaa", 70.0), (H100, "GPU-bbbb", 30.0)])
    with pytest.raises(PlanRefused) as e:
        preflight_training(_rendered("rg", "multi-gpu"), "multi-gpu", 2, 2)
    assert "but the GPU has 30.0 GiB free" in str(e.value).splitlines()[0]  # the least free of the two
    assert nvml.asked == [0, 1] and nvml.initialised == 0  # every init shut down again
    nvml.devices[1] = (H100, "GPU-bbbb", 75.0)
    assert preflight_training(_rendered("rg", "multi-gpu"), "multi-gpu", 2, 2).peak_gib < 75.0


def test_visible_devices_map_to_nvml_indices(no_cuda_init, monkeypatch):
    nvml = _nvml(monkeypatch, [(H100, "GPU-aaaa", 10.0), (H100, "GPU-bbbb", 20.0), (H100, "GPU-cccc", 30.0)])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert [free_gpu_memory_gib(i) for i in range(3)] == [30.0, 10.0, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bb,GPU-a")
    assert [free_gpu_memory_gib(i) for i in range(2)] == [20.0, 10.0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,2")  # CUDA stops at the first device that is not there
    assert [free_gpu_memory_gib(i) for i in range(3)] == [20.0, None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,1")  # a repeated device: CUDA sees none
    assert free_gpu_memory_gib(0) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert free_gpu_memory_gib(0) is None
    assert nvml.initialised == 0


def test_where_nvml_cannot_say_a_child_process_asks_cuda(no_cuda_init, monkeypatch):
    asked: list[int] = []

    def child(device):
        asked.append(device)
        return 5 * GIB

    monkeypatch.setattr(freemem, "child_free_bytes", child)
    monkeypatch.setattr(freemem, "libcuda_loadable", lambda: True)
    _nvml(monkeypatch, [(H100, "GPU-aaaa", 10.0), ("NVIDIA A100-SXM4-40GB", "GPU-bbbb", 20.0)])
    assert free_gpu_memory_gib(1) == 5.0  # different models, fastest-first: NVML's order may not be CUDA's
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert free_gpu_memory_gib(1) == 20.0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1234")
    assert free_gpu_memory_gib(0) == 5.0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake = _nvml(monkeypatch, [], init_error=FakeNVML.NVMLError_LibraryNotFound("NVML Shared Library Not Found"))
    assert free_gpu_memory_gib(0) == 5.0  # a CUDA driver without NVML (a container without the utilities)
    assert asked == [1, 0, 0]
    monkeypatch.setattr(freemem, "libcuda_loadable", lambda: False)
    assert free_gpu_memory_gib(0) is None and asked == [1, 0, 0]  # neither NVML nor CUDA: no GPU, no child
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    assert free_gpu_memory_gib(0) is None
    assert fake.initialised == 0


def test_the_child_process_reads_cuda_and_answers_none_without_it(no_cuda_init, monkeypatch):
    """The real child: a fresh interpreter with torch; on a CPU machine it finds no device."""
    if sys.modules["torch"].version.cuda is None:
        pytest.skip("a CPU-only torch build")
    assert freemem.child_free_bytes(0) is None
    monkeypatch.setattr(freemem, "_CHILD", "print(12345)")
    assert freemem.child_free_bytes(0) == 12345
    monkeypatch.setattr(freemem, "_CHILD", "raise SystemExit('no driver')")
    assert freemem.child_free_bytes(0) is None  # a failing child: no value, a warning, the run goes on


def test_check_gpus_counts_devices_without_a_context(no_cuda_init, monkeypatch):
    """``torch.cuda.device_count`` asks NVML first and never creates a context (torch/cuda/__init__.py)."""
    from mixtral_ft.errors import PreflightError
    from mixtral_ft.train.preflight import check_gpus

    monkeypatch.setattr(no_cuda_init.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(
        no_cuda_init.cuda, "is_available", lambda: (_ for _ in ()).throw(AssertionError("cuInit in the parent"))
    )
    check_gpus("a100-80gb", 1)
    with pytest.raises(PreflightError, match="needs 2 CUDA GPU"):
        check_gpus("multi-gpu", 2)
