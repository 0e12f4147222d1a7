"""GPUs the planner knows: memory, dense bf16 tensor throughput and memory bandwidth, with sources.

``memory_gib`` is the device's total as ``nvidia-smi`` (and ``torch.cuda.get_device_properties
().total_memory``) reports it, in GiB; the CUDA context is not subtracted here (it is a part of
every plan). ``bf16_tflops`` is the dense (no sparsity) bf16 tensor-core peak with float32
accumulation, the figure PyTorch matmuls can reach. ``bandwidth_gbs`` is the memory bandwidth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mixtral_ft.errors import UsageError, suggest


@dataclass(frozen=True)
class Gpu:
    name: str
    label: str
    memory_gib: float
    bf16_tflops: float
    bandwidth_gbs: float
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


GPUS: dict[str, Gpu] = {g.name: g for g in (
    Gpu("a100-40gb", "NVIDIA A100 40GB SXM4", 40960 / 1024, 312.0, 1555.0,
        "NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 tensor 312 TFLOPS dense (624 with sparsity), "
        "40GB HBM2 at 1,555 GB/s; nvidia-smi total 40960 MiB"),
    Gpu("a100-80gb", "NVIDIA A100 80GB SXM4", 81920 / 1024, 312.0, 2039.0,
        "NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 tensor 312 TFLOPS dense, 80GB HBM2e at "
        "2,039 GB/s; nvidia-smi total 81920 MiB"),
    Gpu("h100-80gb", "NVIDIA H100 80GB SXM5", 81559 / 1024, 989.0, 3350.0,
        "NVIDIA H100 Tensor Core GPU datasheet: BF16 tensor 1,979 TFLOPS with sparsity = 989 dense (SXM), "
        "80GB HBM3 at 3.35 TB/s; nvidia-smi total 81559 MiB"),
    Gpu("h200", "NVIDIA H200 141GB SXM", 143771 / 1024, 989.0, 4800.0,
        "NVIDIA H200 Tensor Core GPU datasheet: BF16 tensor 1,979 TFLOPS with sparsity = 989 dense (SXM), "
        "141GB HBM3e at 4.8 TB/s; nvidia-smi total 143771 MiB"),
    Gpu("l40s", "NVIDIA L40S 48GB", 46068 / 1024, 362.05, 864.0,
        "NVIDIA L40S datasheet: BF16 tensor 362.05 TFLOPS dense (733 with sparsity), 48GB GDDR6 at "
        "864 GB/s; nvidia-smi total 46068 MiB (ECC on)"),
    Gpu("rtx-4090", "NVIDIA GeForce RTX 4090 24GB", 24564 / 1024, 165.2, 1008.0,
        "NVIDIA Ada Lovelace architecture whitepaper (v2.02), RTX 4090: BF16 tensor with FP32 accumulate "
        "165.2 TFLOPS dense (330.3 with FP16 accumulate), 24GB GDDR6X at 1,008 GB/s; nvidia-smi total 24564 MiB"),
    Gpu("a10g", "NVIDIA A10G 24GB (AWS G5)", 23028 / 1024, 125.0, 600.0,
        "NVIDIA A10 datasheet: BF16 tensor 125 TFLOPS dense, 24GB GDDR6 at 600 GB/s; the A10G is AWS's "
        "variant of the A10 and AWS publishes no tensor figure, so 125 is an upper bound; nvidia-smi total 23028 MiB"),
)}
ALIASES = {"a100": "a100-80gb", "a100-40": "a100-40gb", "a100-80": "a100-80gb", "h100": "h100-80gb",
           "h100-80": "h100-80gb", "4090": "rtx-4090", "rtx4090": "rtx-4090", "h200-141gb": "h200"}


def gpu_by_name(name: str) -> Gpu:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise UsageError(suggest(name, list(GPUS), "GPU") + "; or give --gpu-memory GIB")
    return GPUS[key]


def custom_gpu(memory_gib: float, like: Gpu | None = None) -> Gpu:
    """A device known only by its memory; throughput from ``like`` (default A100-80GB) for the time estimate."""
    if memory_gib <= 0:
        raise UsageError(f"--gpu-memory must be positive (got {memory_gib})")
    base = like or GPUS["a100-80gb"]
    return Gpu(f"custom-{memory_gib:g}gib", f"{memory_gib:g} GiB GPU (throughput of {base.label})", memory_gib,
               base.bf16_tflops, base.bandwidth_gbs, f"--gpu-memory {memory_gib:g}; throughput: {base.source}")


def gpu_for_profile(profile: str) -> Gpu:
    """The device a shipped hardware profile is sized for (multi-gpu: one A100 40GB per rank)."""
    return GPUS[{"a100-80gb": "a100-80gb", "a100-40gb": "a100-40gb", "h100-80gb": "h100-80gb",
                 "multi-gpu": "a100-40gb"}.get(profile, "a100-80gb")]
