"""GPUs the planner knows: memory, dense bf16 tensor throughput and memory bandwidth, with sources.

``memory_gib`` is what a process can allocate (the CUDA total capacity PyTorch's out-of-memory message
prints), below nvidia-smi's total (``nvidia_smi_gib``); ``bf16_tflops`` the dense bf16 tensor-core peak;
``bandwidth_gbs`` the memory bandwidth. Why those figures: docs/design/planner.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mixtral_ft.errors import UsageError, suggest


@dataclass(frozen=True)
class Gpu:
    name: str
    label: str
    memory_gib: float  # CUDA total capacity (what PyTorch can allocate)
    bf16_tflops: float
    bandwidth_gbs: float
    source: str
    nvidia_smi_gib: float | None = None  # nvidia-smi's total, for reference

    def as_dict(self) -> dict:
        return asdict(self)


_CAPACITY = (
    'capacity: PyTorch\'s out-of-memory message, "GPU 0 has a total capacity of {cap} GiB" '
    "(cudaMemGetInfo's total){where}"
)

GPUS: dict[str, Gpu] = {
    g.name: g
    for g in (
        Gpu(
            "a100-40gb",
            "NVIDIA A100 40GB SXM4",
            39.39,
            312.0,
            1555.0,
            "NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 tensor 312 TFLOPS dense (624 with sparsity), "
            "40GB HBM2 at 1,555 GB/s; "
            + _CAPACITY.format(
                cap="39.39",
                where=" (39.39-39.50 seen, e.g. "
                "github.com/TianheWu/CoSeR/issues/10: 39.50); nvidia-smi total 40960 MiB",
            ),
            40960 / 1024,
        ),
        Gpu(
            "a100-80gb",
            "NVIDIA A100 80GB SXM4",
            79.15,
            312.0,
            2039.0,
            "NVIDIA A100 Tensor Core GPU datasheet (2021): BF16 tensor 312 TFLOPS dense, 80GB HBM2e at "
            "2,039 GB/s; "
            + _CAPACITY.format(
                cap="79.15",
                where=" (79.15-79.25 seen, e.g. "
                "github.com/levihsu/OOTDiffusion/issues/235: 79.25); nvidia-smi total 81920 MiB",
            ),
            81920 / 1024,
        ),
        Gpu(
            "h100-80gb",
            "NVIDIA H100 80GB SXM5",
            79.19,
            989.0,
            3350.0,
            "NVIDIA H100 Tensor Core GPU datasheet: BF16 tensor 1,979 TFLOPS with sparsity = 989 dense (SXM), "
            "80GB HBM3 at 3.35 TB/s; "
            + _CAPACITY.format(
                cap="79.19", where=" (github.com/axolotl-ai-cloud/axolotl/issues/2531); nvidia-smi total 81559 MiB"
            ),
            81559 / 1024,
        ),
        Gpu(
            "h200",
            "NVIDIA H200 141GB SXM",
            139.72,
            989.0,
            4800.0,
            "NVIDIA H200 Tensor Core GPU datasheet: BF16 tensor 1,979 TFLOPS with sparsity = 989 dense (SXM), "
            "141GB HBM3e at 4.8 TB/s; "
            + _CAPACITY.format(
                cap="139.72",
                where=" (139.72-139.81 seen in published H200 out-of-memory logs); nvidia-smi total 143771 MiB",
            ),
            143771 / 1024,
        ),
        Gpu(
            "l40s",
            "NVIDIA L40S 48GB",
            44.34,
            362.05,
            864.0,
            "NVIDIA L40S datasheet: BF16 tensor 362.05 TFLOPS dense (733 with sparsity), 48GB GDDR6 at "
            "864 GB/s; "
            + _CAPACITY.format(
                cap="44.34",
                where=" (44.34-44.52 seen, e.g. github.com/stepfun-ai/"
                "Step-Video-T2V/issues/8, 8x L40S: 44.42); nvidia-smi total 46068 MiB (ECC on)",
            ),
            46068 / 1024,
        ),
        Gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090 24GB",
            23.52,
            165.2,
            1008.0,
            "NVIDIA Ada Lovelace architecture whitepaper (v2.02), RTX 4090: BF16 tensor with FP32 accumulate "
            "165.2 TFLOPS dense (330.3 with FP16 accumulate), 24GB GDDR6X at 1,008 GB/s; "
            + _CAPACITY.format(
                cap="23.52",
                where=" (23.52-23.65 seen, e.g. github.com/Soul-AILab/SoulX-FlashTalk/"
                "issues/5: 23.52, github.com/3DTopia/Phidias-Diffusion/issues/8: 23.64); nvidia-smi total 24564 MiB",
            ),
            24564 / 1024,
        ),
        Gpu(
            "a10g",
            "NVIDIA A10G 24GB (AWS G5)",
            21.96,
            125.0,
            600.0,
            "NVIDIA A10 datasheet: BF16 tensor 125 TFLOPS dense, 24GB GDDR6 at 600 GB/s; the A10G is AWS's "
            "variant of the A10 and AWS publishes no tensor figure, so 125 is an upper bound; "
            + _CAPACITY.format(
                cap="21.96",
                where=' (21.96-21.99 seen; "A10G reports ~22GB": '
                "github.com/huggingface/local-gemma/pull/25); nvidia-smi total 23028 MiB",
            ),
            23028 / 1024,
        ),
    )
}
# The card each shipped GPU profile is sized for: the multi-gpu profile gives every rank the 80 GB
# card's micro batch (ZeRO-2 shards gradients and optimizer state, not the frozen 4-bit weights;
# configs/profiles/multi-gpu.yml). The one table of profile -> card: `mixft plan`'s default --gpu,
# the golden plans, and train's preflight message use it.
PROFILE_GPU = {"a100-80gb": "a100-80gb", "a100-40gb": "a100-40gb", "h100-80gb": "h100-80gb", "multi-gpu": "a100-80gb"}
ALIASES = {
    "a100": "a100-80gb",
    "a100-40": "a100-40gb",
    "a100-80": "a100-80gb",
    "h100": "h100-80gb",
    "h100-80": "h100-80gb",
    "4090": "rtx-4090",
    "rtx4090": "rtx-4090",
    "h200-141gb": "h200",
}


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
    return Gpu(
        f"custom-{memory_gib:g}gib",
        f"{memory_gib:g} GiB GPU (throughput of {base.label})",
        memory_gib,
        base.bf16_tflops,
        base.bandwidth_gbs,
        f"--gpu-memory {memory_gib:g}; throughput: {base.source}",
    )


def gpu_for_profile(profile: str) -> Gpu:
    """The device a shipped hardware profile is sized for (:data:`PROFILE_GPU`; multi-gpu: an A100 80GB
    per rank); a user's own profile gets the A100 80GB."""
    return GPUS[PROFILE_GPU.get(profile, "a100-80gb")]
