"""The training plan: peak GPU memory per device with its parts, whether it fits, and the hours.

Peak = persistent state (weights, LoRA parameters, gradients, optimizer state) + the largest transient of
one simulated training step + the CUDA context and the caching allocator's overhead. ``fits`` is decided
on the peak raised by the measured error band (:mod:`band`). How each part is counted:
docs/design/planner.md.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.plan.arch import load_arch
from mixtral_ft.plan.band import Band, band_for
from mixtral_ft.plan.expert_lora import PARTS as EXPERT_LORA_PARTS
from mixtral_ft.plan.expert_lora import expert_lora_parts, simulated_setup
from mixtral_ft.plan.gpus import GPUS, Gpu, custom_gpu, gpu_by_name
from mixtral_ft.plan.measure import (
    LA,
    LB,
    SIM_LAYERS,
    TrainingSimulator,
    at_depth,
    measure_training,
    saved_per_layer,
    simulator_for,
    size_key,
)
from mixtral_ft.plan.setup import TrainSetup, setup_from_config
from mixtral_ft.plan.storage import DTYPE_BYTES, training_decisions
from mixtral_ft.plan.timing import DENSE_MODEL, arch_dims, calibrate_dense_mfu, calibrate_mfu, micro_batch_cost
from mixtral_ft.plan.tokens import batching, count_tokens
from mixtral_ft.plan.weights import weight_summary

GIB = 2**30
CUDA_CONTEXT_GIB = 0.6  # CUDA context, cuBLAS/cuDNN handles and loaded kernels (see docs/planning.md)
BNB_8BIT_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096

PART_LABELS = {
    "weights_experts": "weights: experts",
    "weights_attention": "weights: attention",
    "weights_mlp": "weights: dense MLP",
    "weights_embeddings_head": "weights: embeddings + output head",
    "weights_other": "weights: other (norms, router)",
    "lora_params": "LoRA parameters",
    "lora_grads": "LoRA gradients",
    "optimizer_state": "optimizer state",
    "activations": "activations",
    "logits_loss": "logits and loss",
    "dequant_buffers": "dequantization buffers",
    "deepspeed_buffers": "DeepSpeed gradient buckets",
    **EXPERT_LORA_PARTS,  # LoRA on fused experts (lora_target_parameters): plan/expert_lora.py
    "allocator": "allocator: rounding + fragmentation",
    "cuda_context": "CUDA context",
}
DEEPSPEED_REDUCE_BUCKET = 500_000_000  # DeepSpeed's default reduce_bucket_size (elements)


def deepspeed_bucket_bytes(config_path: str | None, stage: int | None, dtype_bytes: int = 2) -> float:
    """ZeRO-1/2 with ``contiguous_gradients`` allocate a gradient bucket of ``reduce_bucket_size``
    elements in the training dtype before every backward, and a second one with ``overlap_comm``
    (``deepspeed/runtime/zero/stage_1_and_2.py``, ``backward``)."""
    if stage not in (1, 2) or not config_path:
        return 0.0
    try:
        zero = json.loads(Path(config_path).read_text(encoding="utf-8")).get("zero_optimization") or {}
    except (OSError, ValueError):
        zero = {}
    if not zero.get("contiguous_gradients", True):
        return 0.0
    bucket = zero.get("reduce_bucket_size", DEEPSPEED_REDUCE_BUCKET)
    bucket = DEEPSPEED_REDUCE_BUCKET if not isinstance(bucket, (int, float)) else bucket
    return float(bucket) * dtype_bytes * (2 if zero.get("overlap_comm", False) else 1)


def optimizer_bytes(optimizer: str, numels: list[int], param_bytes: int) -> tuple[int, str]:
    """State bytes of ``optimizer`` for tensors of ``numels`` elements, and how they were counted."""
    name = optimizer.lower()
    if "8bit" in name and ("adam" in name or "lion" in name):
        states = 1 if "lion" in name else 2
        total = 0
        for n in numels:
            if n < BNB_MIN_8BIT_SIZE:
                total += states * 4 * n
            else:
                blocks = -(-n // BNB_8BIT_BLOCK)
                total += states * (n + 4 * blocks)
        return total, (
            f"bitsandbytes 8-bit blockwise: {states} uint8 state(s) + float32 absmax per 256 values "
            f"(float32 states below {BNB_MIN_8BIT_SIZE} values)"
        )
    if "sgd" in name:
        return 0, "SGD without momentum state"
    if "lion" in name:
        return sum(numels) * param_bytes, "Lion: 1 state in the parameter dtype"
    if "adafactor" in name:
        return sum(numels) * 4 // 8, "Adafactor: factored second moment (rough: 0.5 byte per value)"
    return 2 * sum(numels) * param_bytes, "AdamW: 2 states in the parameter dtype"


@dataclass
class TrainingPlan:
    """``to_dict()`` is the ``--json`` output: ``peak_gib``, ``gpu_memory_gib``, ``fits``, ``parts`` (GiB), ``hours``."""

    gpu: Gpu
    gpus: int
    setup: Any
    arch_name: str
    arch_source: str
    parts: dict[str, float]  # bytes
    peak_phase: str
    phases: dict[str, float]  # transient bytes per phase at full depth
    lora_parameters: int
    lora_dtype: str
    optimizer_note: str
    activation_bytes_per_token_per_layer: float
    saved_bytes_per_layer: float
    measurement: dict[str, Any]
    weights: dict[str, Any]
    band: Band
    allocator: dict[str, Any]  # the replay of the full-depth step (measure.TrainingSimulator.allocator)
    largest_micro_batch: int | None = None
    longest_sequence: int | None = None
    data: dict[str, Any] | None = None
    batching: dict[str, Any] | None = None
    time: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> float:
        return sum(self.parts.values())

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    @property
    def peak_high_gib(self) -> float:
        """The peak raised by the planner's error band: what ``fits`` is decided on."""
        return self.band.high(self.peak_gib)

    @property
    def fits(self) -> bool:
        return self.peak_high_gib <= self.gpu.memory_gib

    @property
    def margin_gib(self) -> float:
        """The card's memory less the high figure."""
        return self.gpu.memory_gib - self.peak_high_gib

    @property
    def allocated_peak_gib(self) -> float:
        """What ``torch.cuda.max_memory_allocated`` would report: the peak without the CUDA context and the
        allocator's overhead."""
        return (self.peak_bytes - self.parts.get("cuda_context", 0.0) - self.parts.get("allocator", 0.0)) / GIB

    @property
    def reserved_peak_gib(self) -> float:
        """What ``torch.cuda.max_memory_reserved`` would report with no memory pressure: the allocated peak
        plus the replay's reserved-but-free bytes at its reserved peak."""
        extra = self.allocator.get("reserved_peak", 0) - self.allocator.get("tracked_peak", 0)
        return self.allocated_peak_gib + max(0, extra) / GIB

    @property
    def hours(self) -> float | None:
        return None if self.time is None else self.time.get("hours")

    def to_dict(self) -> dict[str, Any]:
        s = self.setup
        return {
            "kind": "mixft-plan-train",
            "peak_gib": round(self.peak_gib, 2),
            "peak_high_gib": round(self.peak_high_gib, 2),
            "band": self.band.as_dict(),
            "gpu_memory_gib": round(self.gpu.memory_gib, 2),
            "fits": self.fits,
            "margin_gib": round(self.margin_gib, 2),
            "parts": {k: round(v / GIB, 6) for k, v in self.parts.items()},
            "peak_phase": self.peak_phase,
            "phases_gib": {k: round(v / GIB, 3) for k, v in self.phases.items()},
            "hours": None if self.hours is None else round(self.hours, 4),
            "gpu": self.gpu.as_dict(),
            "gpus": self.gpus,
            "model": {"base_model": s.base_model, "source": self.arch_source},
            "config": {
                "micro_batch_size": s.micro_batch_size,
                "sequence_len": s.sequence_len,
                "gradient_accumulation_steps": s.gradient_accumulation_steps,
                "num_epochs": s.num_epochs,
                "max_steps": s.max_steps,
                "adapter": s.adapter,
                "load_in_4bit": s.load_in_4bit,
                "quantize_moe_experts": s.quantize_moe_experts,
                "optimizer": s.optimizer,
                "gradient_checkpointing": s.checkpointing_mode,
                "attention": s.attn_implementation,
                "sample_packing": s.sample_packing,
                "compute_dtype": s.compute_dtype,
                "deepspeed_stage": s.deepspeed_stage,
            },
            "lora": {"parameters": self.lora_parameters, "dtype": self.lora_dtype},
            "optimizer_state": self.optimizer_note,
            "activation_bytes_per_token_per_layer": round(self.activation_bytes_per_token_per_layer, 1),
            "largest_micro_batch": self.largest_micro_batch,
            "longest_sequence": self.longest_sequence,
            "weights": {
                "total_gib": round(self.weights["total"] / GIB, 3),
                "tensors": self.weights["tensors"],
                "tensors_4bit": self.weights["tensors_4bit"],
                "dtypes": self.weights["dtypes"],
            },
            "data": self.data,
            "batching": self.batching,
            "time": self.time,
            "constants": {"cuda_context_gib": CUDA_CONTEXT_GIB},
            "allocator": {
                "method": "replay of PyTorch's CUDA caching allocator (default configuration) on the full-depth step",
                "layers": self.allocator.get("layers"),
                "allocated_peak_gib": round(self.allocated_peak_gib, 3),
                "reserved_peak_gib": round(self.reserved_peak_gib, 3),
                "needed_gib": round(self.allocator.get("needed", 0) / GIB, 3),
            },
            "measurement": {
                "cache_key": self.measurement.get("cache", {}).get("key"),
                "measured_now": self.measurement.get("cache", {}).get("measured", []),
                "versions": self.measurement.get("versions"),
            },
            "notes": self.notes,
        }


def _resolve_gpu(gpu: Gpu | str | float | None) -> Gpu:
    if isinstance(gpu, Gpu):
        return gpu
    if isinstance(gpu, (int, float)):
        return custom_gpu(float(gpu))
    return gpu_by_name(gpu or "a100-80gb")


def _config_values(config) -> dict[str, Any]:
    values = config if isinstance(config, dict) else getattr(config, "values", None)
    if not isinstance(values, dict):
        raise TypeError("config must be a RenderedConfig or a dict of Axolotl keys")
    return values


class _Planner:
    """Memory arithmetic for one setup; sizes can vary (the micro batch / sequence searches)."""

    def __init__(self, arch, setup, use_cache: bool):
        self.expert_lora = expert_lora_parts(arch, setup, optimizer_bytes)  # hook: plan/expert_lora.py
        self.arch, self.setup, self.use_cache = arch, simulated_setup(setup), use_cache
        self.decisions = training_decisions(setup, arch.model_type)
        self.band = band_for(setup)
        self.weights = weight_summary(arch, self.decisions, setup.model_config_overrides, use_cache=use_cache)
        self._sim: TrainingSimulator | None = None
        self.measured: dict[str, Any] = {}

    def simulator(self) -> TrainingSimulator:
        if self._sim is None:
            self._sim = simulator_for(self.arch, self.setup)
        return self._sim

    def measurement(self, batch: int, seq: int) -> dict[str, Any]:
        data = measure_training(
            self.arch,
            self.setup,
            [(batch, seq)],
            use_cache=self.use_cache,
            simulator=self._sim if self._sim is not None else _LazySimulator(self),
        )
        self.measured = data
        return data["sizes"][size_key(batch, seq)] | {"_lora": data["lora"]}

    def parts(self, batch: int, seq: int) -> tuple[dict[str, float], str, dict[str, float], dict[str, Any]]:
        entry = self.measurement(batch, seq)
        layers = self.arch.num_layers
        w = self.weights["parts"]
        parts: dict[str, float] = {f"weights_{k}": float(v) for k, v in w.items() if v}
        setup = self.setup
        world = setup.world_size if setup.deepspeed_stage in (1, 2, 3) else 1
        lora = entry["_lora"]
        pbytes = DTYPE_BYTES.get(lora["dtype"], 4)
        numels = _at_depth_list(lora[LA], lora[LB], layers)
        n_lora = sum(numels)
        parts["lora_params"] = float(n_lora * pbytes)
        parts["lora_grads"] = float(n_lora * pbytes) / (world if setup.deepspeed_stage in (2, 3) else 1)
        opt, note = optimizer_bytes(setup.optimizer, numels, pbytes)
        parts["optimizer_state"] = float(opt) / world
        phases = at_depth(entry, layers)
        totals = {ph: sum(v for tag, v in tags.items() if tag != "grads") for ph, tags in phases.items()}
        peak_phase = max(totals, key=totals.__getitem__)
        tags = phases[peak_phase]
        parts["activations"] = max(0.0, tags["activations"])
        parts["logits_loss"] = max(0.0, tags["logits"])
        parts["dequant_buffers"] = max(0.0, tags["dequant"])
        buckets = deepspeed_bucket_bytes(
            setup.deepspeed_config, setup.deepspeed_stage, DTYPE_BYTES.get(setup.compute_dtype, 2)
        )
        if buckets:
            parts["deepspeed_buffers"] = buckets
        parts.update(self.expert_lora)
        alloc = entry["allocator"]
        parts["allocator"] = float(max(0, alloc["needed"] - alloc["tracked_peak"]))
        parts["cuda_context"] = CUDA_CONTEXT_GIB * GIB
        extra = {"n_lora": n_lora, "lora_dtype": lora["dtype"], "optimizer_note": note, "entry": entry}
        return parts, peak_phase, totals, extra

    def peak_gib(self, batch: int, seq: int) -> float:
        return sum(self.parts(batch, seq)[0].values()) / GIB

    def high_gib(self, batch: int, seq: int) -> float:
        return self.band.high(self.peak_gib(batch, seq))


class _LazySimulator:
    """Builds the fake models only if a size is missing from the cache."""

    def __init__(self, planner: _Planner):
        self.planner = planner

    def lora_parameters(self) -> dict[str, Any]:
        return self.planner.simulator().lora_parameters()

    def run(self, batch: int, seq: int) -> dict[str, Any]:
        return self.planner.simulator().run(batch, seq)


def _at_depth_list(first: list[int], second: list[int], layers: int) -> list[int]:
    """Tensor sizes at ``layers`` layers: the deeper simulated list plus a copy of what its last layer
    added for every further layer."""

    extra = Counter(second) - Counter(first)
    out = list(second)
    for n, c in extra.items():
        out += [n] * c * (layers - SIM_LAYERS[1])
    return out


def _largest(fits, lo: int, hi: int) -> int | None:
    """Largest x in [lo, hi] with fits(x) (fits is monotone decreasing); None if not even lo."""
    if not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_training(
    config,
    data_dir: str | Path | None = None,
    gpu: Gpu | str | float | None = "a100-80gb",
    *,
    task: str | None = None,
    gpus: int = 1,
    model=None,
    use_cache: bool = True,
    search: bool = True,
    casts: str = "axolotl",
) -> TrainingPlan:
    """Plan a training run: peak memory per GPU, its parts, fits or not, and (with data) hours.

    ``config``: the rendered Axolotl config (``RenderedConfig`` or its ``values`` dict, e.g. from
    ``mixtral_ft.axolotl_cfg.render.render``). ``data_dir``: the prepared split (``train.jsonl``);
    ``None`` skips the hours. ``gpu``: a name of :data:`mixtral_ft.plan.gpus.GPUS`, a ``Gpu`` or a
    memory size in GiB. ``task``: ``rg``/``tc`` (how rows are tokenized; guessed from the dataset
    type when omitted). ``gpus``: processes (ZeRO shards gradients and optimizer state over them).
    ``model``: the architecture instead of the config's ``base_model`` (a model directory, a
    config.json path, a dict or a ``transformers`` config; dense models work as well as MoE).
    ``search``: when the plan does not fit, find the largest micro batch and the longest sequence
    that do (more measurements on a cold cache). ``casts``: the dtype casts of the training stack after
    loading (:data:`mixtral_ft.plan.setup.CASTS`; ``mixft train`` runs Axolotl's), for planning runs of
    other stacks.
    """
    values = _config_values(config)
    setup = setup_from_config(values, world_size=gpus, on_gpu=True, casts=casts)
    arch = load_arch(model if model is not None else setup.base_model)
    the_gpu = _resolve_gpu(gpu)
    planner = _Planner(arch, setup, use_cache)
    parts, peak_phase, phases, extra = planner.parts(setup.micro_batch_size, setup.sequence_len)
    entry = extra["entry"]

    saved = saved_per_layer(entry)
    tokens = setup.tokens_per_micro_batch
    plan = TrainingPlan(
        gpu=the_gpu,
        gpus=gpus,
        setup=setup,
        arch_name=arch.name,
        arch_source=arch.source,
        parts=parts,
        peak_phase=peak_phase,
        phases=phases,
        lora_parameters=extra["n_lora"],
        lora_dtype=extra["lora_dtype"],
        optimizer_note=extra["optimizer_note"],
        activation_bytes_per_token_per_layer=saved["bytes"] / tokens if tokens else 0.0,
        saved_bytes_per_layer=saved["bytes"],
        measurement=planner.measured,
        weights=planner.weights,
        band=planner.band,
        allocator=entry["allocator"],
        notes=_setup_notes(setup),
    )
    if search and not plan.fits:
        _search_fitting_sizes(plan, planner)
    if data_dir is not None:
        _add_time(plan, arch, setup, Path(data_dir), task or _guess_task(values), planner.weights)
    return plan


def _setup_notes(setup) -> list[str]:
    """What the plan assumes about this setup that its table does not show."""
    notes = []
    if setup.deepspeed_stage == 3:
        notes.append(
            "ZeRO-3 would shard the weights over the GPUs; mixft refuses it for Mixtral, and the plan "
            "keeps a full copy of the weights per GPU"
        )
    if setup.attention_kind == "flash":
        notes.append(
            "flash attention is simulated by its memory contract (flash-attn 2.8 varlen: saves q, k, v, "
            "out and the float32 log-sum-exp; backward adds float32 dq accumulators)"
        )
    return notes


SEQUENCE_STEP = 256  # the longest-sequence search moves in steps of this many tokens


def _search_fitting_sizes(plan: TrainingPlan, planner: _Planner) -> None:
    """For a plan that does not fit: the largest micro batch at its sequence length, and the longest
    sequence at its micro batch, whose high figure fits its GPU."""
    setup, limit = plan.setup, plan.gpu.memory_gib
    plan.largest_micro_batch = _largest(
        lambda b: planner.high_gib(b, setup.sequence_len) <= limit, 1, max(1, setup.micro_batch_size - 1)
    )
    best = _largest(
        lambda k: planner.high_gib(setup.micro_batch_size, k * SEQUENCE_STEP) <= limit,
        1,
        max(1, (setup.sequence_len - 1) // SEQUENCE_STEP),
    )
    plan.longest_sequence = best * SEQUENCE_STEP if best else None


def _guess_task(values: dict[str, Any]) -> str:
    ds = (values.get("datasets") or [{}])[0]
    return "rg" if isinstance(ds, dict) and ds.get("type") == "context_qa.load_v2" else "tc"


def _add_time(plan: TrainingPlan, arch, setup, data_dir: Path, task: str, weights: dict[str, Any]) -> None:
    data = count_tokens(task, data_dir, setup.base_model, setup.sequence_len, setup.excess_length_strategy)
    b = batching(data, setup)
    calib = report_calibration() if arch.is_moe else dense_calibration()
    mfu = calib["mfu"]
    pairs_per_micro = b.attention_pairs_per_epoch / max(b.micro_batches_per_epoch * setup.world_size, 1)
    cost = micro_batch_cost(
        weights,
        arch_dims(arch),
        b.token_slots_per_micro_batch,
        pairs_per_micro,
        checkpointing=setup.checkpointing_mode != "none",
        frozen_base=bool(setup.adapter),
    )
    micro_s = cost.seconds(plan.gpu.bf16_tflops, plan.gpu.bandwidth_gbs, mfu)
    accum = setup.gradient_accumulation_steps
    steps_per_epoch = b.micro_batches_per_epoch // accum
    if setup.max_steps:
        total_steps = setup.max_steps
    else:
        total_steps = int(steps_per_epoch * setup.num_epochs)
    step_s = micro_s * accum
    hours = total_steps * step_s / 3600
    tokens_per_step = b.token_slots_per_micro_batch * accum * setup.world_size
    plan.data = data.as_dict()
    plan.batching = b.as_dict()
    plan.time = {
        "hours": hours,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "step_s": round(step_s, 3),
        "token_slots_per_step": tokens_per_step,
        "token_slots_per_s": round(tokens_per_step / step_s, 1) if step_s else None,
        "tflop_per_step": round(cost.flops * accum / 1e12, 2),
        "flops_split": {k: round(v * accum / 1e12, 2) for k, v in cost.parts.items()},
        "dequant_gb_per_step": round(cost.dequant_bytes * accum / 1e9, 1),
        "mfu": mfu,
        "mfu_kind": "moe" if arch.is_moe else "dense",
        "mfu_basis": calib,
    }
    if steps_per_epoch == 0:
        plan.notes.append("the training split fills less than one optimizer step: Axolotl would train nothing")
    plan.notes += data.notes


def report_calibration(use_cache: bool = True) -> dict[str, Any]:
    """The MFU calibrated on the reference report (Mixtral-8x7B QLoRA, the shipped RG config's settings)."""
    arch = load_arch("mistralai/Mixtral-8x7B-Instruct-v0.1")
    setup = TrainSetup(base_model=arch.name, adapter="qlora", load_in_4bit=True, quantize_moe_experts=True)
    weights = weight_summary(arch, training_decisions(setup, arch.model_type), {}, use_cache=use_cache)
    return calibrate_mfu(weights, arch, GPUS)


def dense_calibration(use_cache: bool = True) -> dict[str, Any]:
    """The MFU for dense models (:func:`mixtral_ft.plan.timing.calibrate_dense_mfu`): fitted on published
    Llama-2-7B QLoRA throughput, with the error on held-out runs."""
    arch = load_arch(DENSE_MODEL)

    def weights_for(load_in_4bit: bool) -> dict[str, Any]:
        setup = TrainSetup(base_model=arch.name, adapter="qlora" if load_in_4bit else "lora", load_in_4bit=load_in_4bit)
        return weight_summary(arch, training_decisions(setup, arch.model_type), {}, use_cache=use_cache)

    return calibrate_dense_mfu(weights_for, arch, GPUS)
