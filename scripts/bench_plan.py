"""Plan vs published measurements (the table goes in docs/planning.md).

Runs `mixft plan`'s library on every point of scripts/plan_points.yaml - LoRA/QLoRA peak GPU memory
that others measured (or claimed) on Hugging Face / PEFT stacks - and compares:

    .venv/bin/python scripts/bench_plan.py --out runs/bench-plan
    .venv/bin/python scripts/bench_plan.py --only fsdp-qlora-llama2-7b-qlora-ddp-bs8,peft-readme-bloomz-7b1-lora-fp32

For each point: the measured peak (GiB), the planned peak on the source's counter, the error in percent,
the plan's fits verdict for the card the source used against what happened (right / wrong; on the peak, and
on the high figure `fits` uses), and whether the number is a measurement, a boundary of a sweep or a claim.
The summary is the median error over the fully known measured points, the trend of the signed error with
the tokens of a row, and the error band per kind of run (mixtral_ft.plan.band; --bands prints it as
that module holds it). A point the planner cannot plan (e.g. FSDP, which mixft does not run) is a row
with the reason.

Each point is planned as its stack ran it, where the planner can say so: a point on transformers before
4.49 is simulated with that loss (legacy_causal_lm_loss, measured in a cache folder of its own), and a
point's `casts` go to plan_training.

Writes OUT/results.json, OUT/results.md and OUT/manifest.json (versions, the points file's hash, the
command line); prints the table. The planner measures each new architecture once on the CPU and
caches it ($MIXFT_CACHE/plan), so the first run takes minutes and later ones seconds.

The points file alone can be checked without planning anything: --check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POINTS = REPO / "scripts" / "plan_points.yaml"

KINDS = ("measured", "boundary", "claim")
METRICS = ("max_memory_allocated", "max_memory_reserved", "nvidia-smi", "unstated", "estimate", "capacity")
UNITS = {"GiB": 1.0, "GB": 1.0, "MiB": 1 / 1024}  # "GB" readings of nvidia-smi/W&B are GiB (see the file header)
PARALLEL = {
    "single": "one GPU",
    "ddp": "data parallel: a full replica per GPU",
    "fsdp_no_shard": "FSDP NO_SHARD: a full replica per GPU, planned as data parallel",
    "fsdp_full_shard": "FSDP FULL_SHARD: weights split over the GPUs; mixft runs no FSDP",
    "fsdp_full_shard_cpu_offload": "FSDP with parameters offloaded to the CPU; mixft runs no FSDP",
}
NOT_PLANNED_PARALLEL = {"fsdp_full_shard", "fsdp_full_shard_cpu_offload"}
# Keys in a point's `train` block that are not Axolotl's (the file header explains them).
EXTRA_TRAIN_KEYS = ("tokens_per_micro_batch", "base_dtype", "lora_dtype", "parallel")
LEGACY_LOSS_BEFORE = (4, 49)  # transformers releases before this copy the shifted logits in ForCausalLMLoss
CASTS = ("axolotl", "peft", "trl")  # mixtral_ft.plan.setup.CASTS (the file is checked without importing mixft)
ATTENTION_KEYS = ("flash_attention", "attn_implementation", "xformers_attention", "sdp_attention")
MODEL_SHAPE_KEYS = ("model_type", "hidden_size", "vocab_size")
TARGET_ERROR_PCT = 15.0  # no fully known measured peak planned more than this far below it
TARGET_MEDIAN_PCT = 5.0  # the median signed error over the fully known measured peaks, either way


class PointsError(Exception):
    """The points file is malformed; ``problems`` lists every problem found."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


# --------------------------------------------------------------------------------------------------
# the points file
# --------------------------------------------------------------------------------------------------


def _layers(config: dict[str, Any]) -> Any:
    return config.get("num_hidden_layers", config.get("n_layer"))


def validate(data: Any) -> list[str]:
    """Every schema problem of a loaded points file, as ``point-id: field: what is wrong``."""
    problems: list[str] = []
    if not (isinstance(data, dict) and isinstance(data.get("points"), list) and isinstance(data.get("models"), dict)):
        return ["top level: needs a `models:` mapping and a `points:` list"]
    models: dict[str, Any] = data["models"]
    for name, model in models.items():
        cfg = model.get("config") if isinstance(model, dict) else None
        if not isinstance(cfg, dict):
            problems.append(f"models.{name}: config: missing")
            continue
        for key in MODEL_SHAPE_KEYS:
            if not cfg.get(key):
                problems.append(f"models.{name}: config.{key}: missing")
        if not _layers(cfg):
            problems.append(f"models.{name}: config.num_hidden_layers: missing")
        if not model.get("hf_id"):
            problems.append(f"models.{name}: hf_id: missing")
    seen: set[str] = set()
    for i, point in enumerate(data["points"]):
        pid = point.get("id") if isinstance(point, dict) else None
        where = f"points[{i}]" if not pid else pid
        if not isinstance(point, dict) or not pid:
            problems.append(f"{where}: id: missing")
            continue
        if pid in seen:
            problems.append(f"{where}: id: duplicate")
        seen.add(pid)
        src = point.get("source")
        if not isinstance(src, dict) or not all(src.get(k) for k in ("title", "url", "where")):
            problems.append(f"{where}: source: needs title, url and where")
        if not _version_ok(point.get("transformers")):
            problems.append(f'{where}: transformers: a version such as "4.36" or a range "4.36-4.38"')
        if point.get("casts", "axolotl") not in CASTS:
            problems.append(f"{where}: casts: {point.get('casts')!r} is not one of {', '.join(CASTS)}")
        if point.get("kind") not in KINDS:
            problems.append(f"{where}: kind: {point.get('kind')!r} is not one of {', '.join(KINDS)}")
        if not isinstance(point.get("fully_known"), bool):
            problems.append(f"{where}: fully_known: must be true or false")
        if point.get("model") not in models:
            problems.append(f"{where}: model: {point.get('model')!r} is not under models:")
        train = point.get("train")
        if not isinstance(train, dict):
            problems.append(f"{where}: train: missing")
            continue
        problems += _validate_train(where, train)
        m = point.get("measured")
        if not isinstance(m, dict):
            problems.append(f"{where}: measured: missing")
            continue
        problems += _validate_measured(where, point, m)
        assumed = point.get("assumed") or []
        unknowns = point.get("unknowns")
        if point.get("fully_known"):
            if assumed:
                problems.append(f"{where}: assumed: a fully known point assumes nothing ({', '.join(assumed)})")
            if point.get("kind") == "boundary":
                problems.append(f"{where}: fully_known: a boundary point's peak is the card, not a reading")
        elif not unknowns:
            problems.append(f"{where}: unknowns: a point that is not fully known says what is unknown")
        for key in assumed:
            if key not in train:
                problems.append(f"{where}: assumed: {key!r} is not a key of train")
        plan_as = point.get("plan_as")
        if plan_as is not None and not isinstance(plan_as, dict):
            problems.append(f"{where}: plan_as: a mapping of Axolotl keys laid over train")
        elif plan_as and set(plan_as) & set(EXTRA_TRAIN_KEYS):
            problems.append(
                f"{where}: plan_as: changes {', '.join(sorted(set(plan_as) & set(EXTRA_TRAIN_KEYS)))},"
                " which are the source's facts"
            )
    return problems


def _version_ok(value: Any) -> bool:
    import re

    return isinstance(value, str) and re.fullmatch(r"\d+\.\d+(-\d+\.\d+)?", value) is not None


def transformers_version(point: dict[str, Any]) -> tuple[int, int]:
    """The newest release a point's ``transformers`` names (the upper end of a range)."""
    major, minor = point["transformers"].split("-")[-1].split(".")
    return int(major), int(minor)


def _validate_train(where: str, train: dict[str, Any]) -> list[str]:
    out = []
    for key in ("adapter", "lora_r", "sequence_len", "micro_batch_size", "tokens_per_micro_batch", "optimizer"):
        if train.get(key) in (None, ""):
            out.append(f"{where}: train.{key}: missing")
    if train.get("adapter") not in ("lora", "qlora"):
        out.append(f"{where}: train.adapter: {train.get('adapter')!r} is not lora or qlora")
    if not (train.get("lora_target_modules") or train.get("lora_target_linear")):
        out.append(f"{where}: train.lora_target_modules: none, and lora_target_linear is not set")
    if "gradient_checkpointing" not in train:
        out.append(f"{where}: train.gradient_checkpointing: missing (true or false)")
    if not any(train.get(k) for k in ATTENTION_KEYS):
        out.append(f"{where}: train: no attention kernel ({' / '.join(ATTENTION_KEYS)})")
    if not (train.get("bf16") or train.get("fp16") or train.get("base_dtype")):
        out.append(f"{where}: train: no precision (bf16, fp16 or base_dtype)")
    if train.get("adapter") == "qlora" and not train.get("load_in_4bit"):
        out.append(f"{where}: train.load_in_4bit: a qlora point loads in 4-bit")
    par = train.get("parallel")
    if not isinstance(par, dict) or par.get("kind") not in PARALLEL or not int(par.get("gpus") or 0) >= 1:
        out.append(f"{where}: train.parallel: needs kind ({', '.join(PARALLEL)}) and gpus >= 1")
    try:
        slots = int(train["micro_batch_size"]) * int(train["sequence_len"])
        if int(train["tokens_per_micro_batch"]) != slots:
            out.append(
                f"{where}: train.tokens_per_micro_batch: {train['tokens_per_micro_batch']} is not "
                f"micro_batch_size x sequence_len = {slots} (the planner plans full rows)"
            )
    except (KeyError, TypeError, ValueError):
        pass
    return out


def _validate_measured(where: str, point: dict[str, Any], m: dict[str, Any]) -> list[str]:
    out = []
    peak, fits = m.get("peak"), m.get("fits")
    if peak is None and fits is None:
        out.append(f"{where}: measured: neither a peak nor a fits verdict")
    if fits not in (True, False, None):
        out.append(f"{where}: measured.fits: true, false or null")
    if peak is not None:
        unit = m.get("unit")
        if unit not in UNITS:
            out.append(f"{where}: measured.unit: {unit!r} is not one of {', '.join(UNITS)}")
        elif not isinstance(m.get("peak_gib"), (int, float)):
            out.append(f"{where}: measured.peak_gib: missing")
        elif abs(float(peak) * UNITS[unit] - float(m["peak_gib"])) > 0.01 and point.get("kind") != "boundary":
            out.append(f"{where}: measured.peak_gib: {m['peak_gib']} is not {peak} {unit}")
        if m.get("metric") not in METRICS:
            out.append(f"{where}: measured.metric: {m.get('metric')!r} is not one of {', '.join(METRICS)}")
    if fits is not None and not isinstance(m.get("gpu_memory_gib"), (int, float)):
        out.append(f"{where}: measured.gpu_memory_gib: a fits verdict needs the card's memory")
    tput = m.get("throughput")
    if tput is not None and not (isinstance(tput, dict) and tput.get("tokens_per_s_per_gpu") and tput.get("gpu_table")):
        out.append(
            f"{where}: measured.throughput: needs tokens_per_s_per_gpu and gpu_table (a GPU of the planner's table)"
        )
    if point.get("kind") == "boundary" and (peak is None or fits is not True):
        out.append(f"{where}: measured: a boundary point fits and its peak is the card's memory")
    if point.get("fully_known") and point.get("kind") == "measured" and peak is None and fits is None:
        out.append(f"{where}: measured: a fully known measurement needs a peak or a verdict")
    return out


def load_points(path: Path = POINTS) -> dict[str, Any]:
    """The points file, checked (raises :class:`PointsError` listing every problem)."""
    import yaml

    from mixtral_ft.util.yamlsafe import safe_load

    try:
        data = safe_load(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, yaml.YAMLError) as e:
        raise PointsError(Path(path), [f"cannot read: {e}"]) from None
    problems = validate(data)
    if problems:
        raise PointsError(Path(path), problems)
    return data


def axolotl_config(point: dict[str, Any], config_json: Path) -> dict[str, Any]:
    """The Axolotl config the planner reads: ``train`` with ``plan_as`` laid over it (a null removes a key),
    without the file's own keys, and ``base_model`` = the model's config.json."""
    cfg = {k: v for k, v in point["train"].items() if k not in EXTRA_TRAIN_KEYS}
    for key, value in (point.get("plan_as") or {}).items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    cfg["base_model"] = str(config_json)
    kwargs = cfg.get("gradient_checkpointing_kwargs") or {}
    if cfg.get("gradient_checkpointing") and "use_reentrant" not in kwargs:
        # Every point ran on transformers 4.x, whose gradient_checkpointing_enable (and Axolotl before 0.21)
        # defaulted to reentrant checkpointing; the planner's own default is Axolotl 0.21's, non-reentrant.
        cfg["gradient_checkpointing_kwargs"] = {**kwargs, "use_reentrant": True}
    return cfg


def world_size(point: dict[str, Any]) -> int:
    return int(point["train"]["parallel"]["gpus"])


def write_model_configs(models: dict[str, Any], directory: Path) -> dict[str, Path]:
    """One ``config.json`` per model of the points file (what ``base_model`` points at)."""
    paths = {}
    for name, model in models.items():
        path = directory / name / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = dict(model["config"])
        cfg.setdefault("_name_or_path", model["hf_id"])
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------------
# planning and comparing
# --------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One point: what was measured, what the plan says, and how they compare."""

    id: str
    source: str
    url: str
    kind: str
    fully_known: bool
    reference: bool
    model: str
    tokens: int
    gpu: str | None
    gpu_memory_gib: float | None
    measured_gib: float | None
    metric: str | None
    measured_fits: bool | None
    row_tokens: int = 0  # tokens of one row (sequence_len)
    run_kind: str | None = None  # the band's kind (mixtral_ft.plan.band.run_kind)
    planned_gib: float | None = None
    planned_high_gib: float | None = None  # the peak raised by the error band
    planned_fits: bool | None = None  # the peak against the card
    planned_fits_high: bool | None = None  # the high figure against the card (the plan's `fits`)
    parts_gib: dict[str, float] = field(default_factory=dict)
    peak_phase: str | None = None
    measured_tokens_per_s: float | None = None  # per GPU, where the source gives a throughput
    planned_tokens_per_s: float | None = None
    throughput_gpu: str | None = None  # the GPU of the planner's table the throughput is planned for
    counter_offset_gib: float = 0.0  # the plan on the source's counter less its peak (see compare_on_counter)
    legacy_loss: bool = False  # simulated with the loss of transformers before 4.49
    casts: str = "axolotl"
    not_planned: str | None = None  # why the planner was not asked (a setting mixft does not run)
    planner_error: str | None = None  # the planner failed on a point it should plan

    @property
    def compared_gib(self) -> float | None:
        """The plan on the source's counter."""
        return None if self.planned_gib is None else self.planned_gib + self.counter_offset_gib

    @property
    def error_pct(self) -> float | None:
        if self.measured_gib is None or self.compared_gib is None:
            return None
        return 100.0 * (self.compared_gib - self.measured_gib) / self.measured_gib

    @property
    def throughput_error_pct(self) -> float | None:
        if self.measured_tokens_per_s is None or self.planned_tokens_per_s is None:
            return None
        return 100.0 * (self.planned_tokens_per_s - self.measured_tokens_per_s) / self.measured_tokens_per_s

    @property
    def verdict(self) -> str:
        """``right``/``wrong`` when the source says whether it fit on a named card (the plan's peak against the
        card); ``n/a`` otherwise."""
        if self.measured_fits is None or self.planned_fits is None:
            return "n/a"
        return "right" if self.measured_fits == self.planned_fits else "wrong"

    @property
    def in_median(self) -> bool:
        """Counted in the headline error: a fully known measured peak that was planned."""
        return self.fully_known and self.kind == "measured" and self.error_pct is not None

    @property
    def in_band(self) -> bool:
        """A row the error band is taken from: a measured peak or a boundary, planned."""
        return self.kind in ("measured", "boundary") and self.error_pct is not None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            compared_gib=self.compared_gib,
            error_pct=None if self.error_pct is None else round(self.error_pct, 1),
            verdict=self.verdict,
            in_median=self.in_median,
            in_band=self.in_band,
            throughput_error_pct=None if self.throughput_error_pct is None else round(self.throughput_error_pct, 1),
        )
        return out


def new_row(point: dict[str, Any], models: dict[str, Any], as_published: bool = True) -> Row:
    """The row of ``point``; ``as_published=False`` plans it as today's stack runs it (installed loss, Axolotl's
    casts) instead of as its source's stack did."""
    m = point["measured"]
    tput = m.get("throughput") or {}
    return Row(
        measured_tokens_per_s=tput.get("tokens_per_s_per_gpu"),
        throughput_gpu=tput.get("gpu_table"),
        id=point["id"],
        source=point["source"]["title"],
        url=point["source"]["url"],
        kind=point["kind"],
        fully_known=point["fully_known"],
        reference=bool(point.get("reference")),
        model=point["model"],
        tokens=int(point["train"]["tokens_per_micro_batch"]),
        gpu=m.get("gpu"),
        gpu_memory_gib=m.get("gpu_memory_gib"),
        measured_gib=m.get("peak_gib"),
        metric=m.get("metric"),
        measured_fits=m.get("fits"),
        row_tokens=int(point["train"]["sequence_len"]),
        legacy_loss=as_published and transformers_version(point) < LEGACY_LOSS_BEFORE,
        casts=point.get("casts", "axolotl") if as_published else "axolotl",
    )


def legacy_causal_lm_loss(logits, labels, vocab_size: int, num_items_in_batch=None, ignore_index: int = -100, **kwargs):
    """transformers' ``ForCausalLMLoss`` before 4.49 (4.47.1: ``loss/loss_utils.py`` lines 32-47; 4.31-4.45
    inlined the same steps in ``LlamaForCausalLM.forward``, after ``logits = logits.float()``): the float32
    upcast, then a contiguous copy of the shifted logits, which later releases avoid by padding the labels."""
    from transformers.loss.loss_utils import fixed_cross_entropy

    logits = logits.float()
    shift_logits = logits[..., :-1, :].contiguous()
    shift_labels = labels[..., 1:].contiguous()
    shift_logits = shift_logits.view(-1, vocab_size)
    shift_labels = shift_labels.view(-1).to(shift_logits.device)
    return fixed_cross_entropy(shift_logits, shift_labels, num_items_in_batch, ignore_index, **kwargs)


@contextlib.contextmanager
def legacy_loss(on: bool) -> Iterator[None]:
    """With ``on``, simulate the loss of transformers before 4.49 (:func:`legacy_causal_lm_loss`), measured in a
    cache folder of its own (the planner's cache key covers the installed libraries, not this substitution)."""
    if not on:
        yield
        return
    from transformers.loss import loss_utils

    base = Path(os.environ.get("MIXFT_CACHE", Path.home() / ".cache" / "mixft"))
    saved_loss, saved_cache = loss_utils.LOSS_MAPPING["ForCausalLM"], os.environ.get("MIXFT_CACHE")
    loss_utils.LOSS_MAPPING["ForCausalLM"] = legacy_causal_lm_loss
    os.environ["MIXFT_CACHE"] = str(base / "bench-transformers-before-4.49")
    try:
        yield
    finally:
        loss_utils.LOSS_MAPPING["ForCausalLM"] = saved_loss
        if saved_cache is None:
            os.environ.pop("MIXFT_CACHE", None)
        else:
            os.environ["MIXFT_CACHE"] = saved_cache


def plan_point(point: dict[str, Any], config_json: Path, row: Row, use_cache: bool = True):
    """The planner's TrainingPlan for one point (on the card the source used; 80 GiB when it names none), with
    the row's loss and casts."""
    from mixtral_ft.plan.training import plan_training

    gpu = point["measured"].get("gpu_memory_gib") or 80.0
    with legacy_loss(row.legacy_loss):
        return plan_training(
            axolotl_config(point, config_json),
            gpu=float(gpu),
            gpus=world_size(point),
            use_cache=use_cache,
            search=False,
            casts=row.casts,
        )


def on_counter(plan, metric: str | None) -> float:
    """The plan read on the counter the source used.

    The plan's peak is what the device needs to run the step: the live bytes, the caching allocator's
    rounding and fragmentation (the replay's needed memory) and the CUDA context. A counter shows something
    else: ``max_memory_allocated`` the live bytes alone (:attr:`TrainingPlan.allocated_peak_gib`);
    ``max_memory_reserved`` the allocator's segments at their peak with nothing pressing
    (:attr:`TrainingPlan.reserved_peak_gib`); nvidia-smi, and the unstated "GB" readings the points file
    takes for nvidia-smi's or W&B's (NVML's) figure, those segments and the CUDA context. A card's capacity
    (a boundary or an out-of-memory verdict) and an estimate are compared with the peak itself."""
    from mixtral_ft.plan.training import CUDA_CONTEXT_GIB

    if metric == "max_memory_allocated":
        return plan.allocated_peak_gib
    if metric == "max_memory_reserved":
        return plan.reserved_peak_gib
    if metric in ("nvidia-smi", "unstated"):
        return plan.reserved_peak_gib + CUDA_CONTEXT_GIB
    return plan.peak_gib


def fill_row(row: Row, plan) -> None:
    """What a plan says about a row's point."""
    from mixtral_ft.plan.band import run_kind

    row.planned_gib, row.planned_high_gib, row.peak_phase = plan.peak_gib, plan.peak_high_gib, plan.peak_phase
    if row.gpu_memory_gib is not None:
        row.planned_fits = plan.peak_gib <= plan.gpu.memory_gib
        row.planned_fits_high = plan.fits
    row.parts_gib = {k: round(v / 2**30, 3) for k, v in plan.parts.items()}
    row.counter_offset_gib = on_counter(plan, row.metric) - plan.peak_gib
    row.run_kind = run_kind(plan.setup)


def planned_tokens_per_s(point: dict[str, Any], config_json: Path, gpu_name: str, use_cache: bool = True) -> float:
    """Token slots per second per GPU by the planner's time model (plan/timing.py): FLOPs with recompute at
    the MFU the plan uses for the model (MoE: calibrated on the reference report; dense: fitted on
    LLaMA-Factory's A100 40GB runs, the fsdp_qlora runs held out), plus the 4-bit dequantization traffic.

    A point's rows are full length and not packed, so a micro batch's attention pairs are rows x length^2."""
    from mixtral_ft.plan.arch import load_arch
    from mixtral_ft.plan.gpus import gpu_by_name
    from mixtral_ft.plan.setup import setup_from_config
    from mixtral_ft.plan.storage import training_decisions
    from mixtral_ft.plan.timing import arch_dims, micro_batch_cost
    from mixtral_ft.plan.training import dense_calibration, report_calibration
    from mixtral_ft.plan.weights import weight_summary

    setup = setup_from_config(axolotl_config(point, config_json), world_size=world_size(point))
    arch = load_arch(setup.base_model)
    weights = weight_summary(
        arch, training_decisions(setup, arch.model_type), setup.model_config_overrides, use_cache=use_cache
    )
    slots = setup.micro_batch_size * setup.sequence_len
    pairs = setup.micro_batch_size * setup.sequence_len**2
    cost = micro_batch_cost(
        weights,
        arch_dims(arch),
        slots,
        pairs,
        checkpointing=setup.checkpointing_mode != "none",
        frozen_base=bool(setup.adapter),
    )
    gpu = gpu_by_name(gpu_name)
    calibration = report_calibration(use_cache) if arch.is_moe else dense_calibration(use_cache)
    return slots / cost.seconds(gpu.bf16_tflops, gpu.bandwidth_gbs, calibration["mfu"])


def run_points(
    data: dict[str, Any],
    work: Path,
    only: set[str] | None = None,
    use_cache: bool = True,
    say=lambda msg: None,
    as_published: bool = True,
) -> list[Row]:
    """Plan every point (or those in ``only``); a point the planner fails on is a row with the error."""
    from mixtral_ft.errors import MixftError

    configs = write_model_configs(data["models"], work / "models")
    rows = []
    points = [p for p in data["points"] if not only or p["id"] in only]
    for i, point in enumerate(points, 1):
        row = new_row(point, data["models"], as_published)
        kind = point["train"]["parallel"]["kind"]
        if kind in NOT_PLANNED_PARALLEL:
            row.not_planned = PARALLEL[kind]
        else:
            say(f"[{i}/{len(points)}] {point['id']}")
            try:
                plan = plan_point(point, configs[point["model"]], row, use_cache=use_cache)
            except MixftError as exc:
                row.planner_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a planner bug is a row of the table and makes the bench exit 1
                row.planner_error = f"{type(exc).__name__}: {exc}"
            else:
                fill_row(row, plan)
                if row.throughput_gpu:
                    row.planned_tokens_per_s = planned_tokens_per_s(
                        point, configs[point["model"]], row.throughput_gpu, use_cache
                    )
        rows.append(row)
    return rows


SHIPPED = (("a100-80gb", "reference-mixtral-rg-a100-80"), ("a100-40gb", "reference-mixtral-rg-a100-40-claim"))


def shipped_rows(data: dict[str, Any], use_cache: bool = True, say=lambda msg: None) -> list[Row]:
    """mixft's own RG config on the report's cards, beside the report's numbers.

    The report's run most likely trained LoRA on the experts too (its points say why); mixft's shipped
    RG config trains attention only. These rows plan the shipped config (``render`` of configs/rg.yml +
    the profile) on the same card and compare it with the same published number; they are not in the median.
    """
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.plan.training import plan_training

    by_id = {p["id"]: p for p in data["points"]}
    rows = []
    for profile, ref_id in SHIPPED:
        ref = by_id[ref_id]
        say(f"[shipped] rg --profile {profile}")
        values = render(
            RenderRequest(task="rg", data_dir=Path("data-dir"), profile=profile, run_dir=Path("run-dir"))
        ).values
        m = ref["measured"]
        row = Row(
            id=f"mixft-rg-{profile}",
            source=f"mixft configs/rg.yml + profile {profile}, against {ref_id}",
            url=ref["source"]["url"],
            kind="shipped",
            fully_known=False,
            reference=True,
            model=ref["model"],
            tokens=int(values["micro_batch_size"]) * int(values["sequence_len"]),
            gpu=m.get("gpu"),
            gpu_memory_gib=m.get("gpu_memory_gib"),
            measured_gib=m.get("peak_gib"),
            metric=m.get("metric"),
            measured_fits=m.get("fits"),
        )
        row.row_tokens = int(values["sequence_len"])
        plan = plan_training(values, gpu=float(m["gpu_memory_gib"]), use_cache=use_cache, search=False)
        fill_row(row, plan)
        rows.append(row)
    return rows


def length_trend(rows: list[Row]) -> dict[str, Any]:
    """How the signed error moves with the length of a row, over the rows the band is taken from: the
    least-squares slope in percentage points per doubling of the row, and Spearman's rank correlation."""
    pts = [(math.log2(r.row_tokens), r.error_pct) for r in rows if r.in_band and r.row_tokens]
    if len(pts) < 3:
        return {"rows": len(pts), "slope_pct_per_doubling": None, "spearman": None}
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mrx, mry = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mrx) * (b - mry) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mrx) ** 2 for a in rx) * sum((b - mry) ** 2 for b in ry))
    return {
        "rows": len(pts),
        "slope_pct_per_doubling": round(slope, 2),
        "spearman": round(cov / var, 2) if var else None,
    }


def bands(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Per kind of run, the signed error of every row the band is taken from (mixtral_ft.plan.band.ROWS)."""
    from mixtral_ft.plan.band import LEFT_OUT, ROWS

    out: dict[str, dict[str, float]] = {kind: {} for kind in ROWS}
    for r in rows:
        if r.in_band and r.kind != "shipped" and r.id not in LEFT_OUT and r.run_kind:
            out[r.run_kind][r.id] = round(r.error_pct, 1)
    return out


def summarize(rows: list[Row]) -> dict[str, Any]:
    """The headline numbers, each with what it was computed over."""
    from mixtral_ft.plan.band import ROWS

    median_rows = [r for r in rows if r.in_median]
    errors = [abs(r.error_pct) for r in median_rows]
    verdicts = [r for r in rows if r.verdict != "n/a" and r.kind != "shipped"]
    wrong = [r.id for r in verdicts if r.verdict == "wrong"]
    signed = [r.error_pct for r in median_rows]
    median_signed = statistics.median(signed) if signed else None
    under = [r.id for r in median_rows if r.error_pct < -TARGET_ERROR_PCT]
    found = bands(rows)
    return {
        "points": len(rows),
        "planned": sum(r.planned_gib is not None for r in rows),
        "not_planned": {r.id: r.not_planned for r in rows if r.not_planned},
        "planner_errors": {r.id: r.planner_error for r in rows if r.planner_error},
        "fully_known_measured": len(median_rows),
        "median_abs_error_pct": round(statistics.median(errors), 1) if errors else None,
        "median_signed_error_pct": None if median_signed is None else round(median_signed, 1),
        "max_abs_error_pct": round(max(errors), 1) if errors else None,
        "within_target": sum(e <= TARGET_ERROR_PCT for e in errors),
        "target_error_pct": TARGET_ERROR_PCT,
        "fully_known_under_target": under,
        "length_trend": length_trend(rows),
        "verdicts": len(verdicts),
        "verdicts_right": len(verdicts) - len(wrong),
        "verdicts_wrong": wrong,
        "targets_met": median_signed is not None
        and abs(median_signed) <= TARGET_MEDIAN_PCT
        and not under
        and not wrong,
        "bands": found,
        "bands_match_library": found == {k: dict(v) for k, v in ROWS.items()},
        "throughput": {
            r.id: {
                "measured": r.measured_tokens_per_s,
                "planned": round(r.planned_tokens_per_s, 1),
                "error_pct": round(r.throughput_error_pct, 1),
                "gpu": r.throughput_gpu,
            }
            for r in rows
            if r.throughput_error_pct is not None
        },
    }


def _fmt(x: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}{suffix}"


COUNTERS = {
    "max_memory_reserved": "reserved",
    "max_memory_allocated": "allocated",
    "capacity": "card",
    "estimate": "estimate",
    "nvidia-smi": "nvidia-smi",
}


def _table_row(r: Row) -> str:
    planned = (
        _fmt(r.planned_gib, 2) if r.planned_gib is not None else ("not planned" if r.not_planned else "planner error")
    )
    if r.planned_gib is not None and r.counter_offset_gib:
        planned += f" ({_fmt(r.compared_gib, 2)})"
    measured = _fmt(r.measured_gib, 2) + (
        "" if r.measured_gib is None else f" ({COUNTERS.get(r.metric or '', 'unstated')})"
    )

    def word(v: bool | None) -> str:
        return "–" if v is None else ("fits" if v else "OOM")

    stack = ("transformers < 4.49" if r.legacy_loss else "installed") + ("" if r.casts == "axolotl" else f", {r.casts}")
    name = f"[{r.id}]({r.url})" if r.url.startswith("http") else r.id
    return (
        f"| {name}{' (reference)' if r.reference else ''} | {r.kind} | {'yes' if r.fully_known else 'no'} "
        f"| {r.row_tokens:,} | {r.tokens:,} | {stack} | {measured} | {planned} | {_fmt(r.error_pct, 1, '%')} "
        f"| {_fmt(r.planned_high_gib, 2)} | {_fmt(r.gpu_memory_gib, 2)} "
        f"| {word(r.measured_fits)} / {word(r.planned_fits)} / {word(r.planned_fits_high)} | {r.verdict} |"
    )


def _summary_lines(s: dict[str, Any]) -> list[str]:
    t = s["length_trend"]
    band_lines = [
        f"  - {kind}: {len(rows)} rows, largest shortfall "
        + (f"{min(rows.values()):+.1f}% ({min(rows, key=rows.__getitem__)})" if rows else "none")
        for kind, rows in s["bands"].items()
    ]
    return [
        (
            f"- Fully known measured peaks planned: {s['fully_known_measured']}; median signed error "
            f"{_fmt(s['median_signed_error_pct'], 1, '%')} (median absolute {_fmt(s['median_abs_error_pct'], 1, '%')}, "
            f"largest {_fmt(s['max_abs_error_pct'], 1, '%')}); below -{s['target_error_pct']:g}%: "
            f"{', '.join(s['fully_known_under_target']) or 'none'}."
        ),
        (
            f"- Signed error against the length of a row ({t['rows']} measured peaks and boundaries): "
            f"{_fmt(t['slope_pct_per_doubling'], 2)} points per doubling, Spearman {_fmt(t['spearman'], 2)}."
        ),
        (
            f"- Fits verdicts checked on the plan's peak (the source names the card and says whether it fit): "
            f"{s['verdicts']}; right: {s['verdicts_right']}; wrong: {', '.join(s['verdicts_wrong']) or 'none'}."
        ),
        f"- Not planned: {', '.join(f'{k} ({v})' for k, v in s['not_planned'].items()) or 'none'}.",
        f"- Planner errors: {', '.join(s['planner_errors']) or 'none'}.",
        (
            f"- Targets (median signed error within ±{TARGET_MEDIAN_PCT:g}%, no fully known peak below "
            f"-{s['target_error_pct']:g}%, every verdict right): {'met' if s['targets_met'] else 'not met'}."
        ),
        "- Error bands (mixtral_ft.plan.band; the library's copy "
        + ("matches" if s["bands_match_library"] else "DIFFERS: update it from `--bands`")
        + "):",
        *band_lines,
    ]


def render_markdown(rows: list[Row], summary: dict[str, Any]) -> str:
    lines = [
        (
            "| point | kind | known | row tokens | micro batch tokens | loss / casts | measured GiB (counter) "
            "| planned GiB (on that counter) | error | high GiB | GPU GiB | fits (source / peak / high) | verdict |"
        ),
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
        *(_table_row(r) for r in rows),
        "",
        *_summary_lines(summary),
    ]
    if summary["throughput"]:
        lines += [
            "",
            (
                "Throughput (token slots per second per GPU; the plan's time model at the MFU it uses for the model: "
                "dense runs at the MFU fitted on the LLaMA-Factory rows, so those four are in-sample and the "
                "fsdp_qlora rows are held out):"
            ),
            "",
            "| point | GPU | measured | planned | error |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {k} | {v['gpu']} | {v['measured']:,.0f} | {v['planned']:,.0f} | {v['error_pct']:+.1f}% |"
            for k, v in summary["throughput"].items()
        ]
    return "\n".join(lines) + "\n"


def _arguments() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=Path, default=POINTS, help="the points file (default scripts/plan_points.yaml)")
    ap.add_argument(
        "--out", type=Path, default=REPO / "out" / "bench-plan", help="where results.* and manifest.json go"
    )
    ap.add_argument("--only", default="", help="comma-separated point ids to plan (default: all)")
    ap.add_argument(
        "--no-cache", action="store_true", help="re-measure every architecture instead of using the plan cache"
    )
    ap.add_argument("--check", action="store_true", help="only check the points file and print a summary of it")
    ap.add_argument(
        "--bands", action="store_true", help="also print the error bands as mixtral_ft.plan.band.ROWS holds them"
    )
    ap.add_argument(
        "--installed-stack",
        action="store_true",
        help="plan every point as today's stack runs it (installed transformers' loss, Axolotl's casts), not as its source did",
    )
    # --only leaves out the two rows of mixft's shipped RG config (they need no point; see shipped_rows)
    return ap


def _write_results(out: Path, args, only: set[str], started: str, rows: list[Row]) -> dict[str, Any]:
    """results.json, results.md and manifest.json; prints the table. Returns the summary."""
    from mixtral_ft.plan.measure import METHOD_VERSION, cache_dir
    from mixtral_ft.plan.training import CUDA_CONTEXT_GIB
    from mixtral_ft.util.atomic import atomic_write_text
    from mixtral_ft.util.hashing import sha256_file
    from mixtral_ft.util.manifest import write_manifest
    from mixtral_ft.util.provenance import command_line, environment, now_iso

    summary = summarize(rows)
    table = render_markdown(rows, summary)
    record = {
        "kind": "mixft-bench-plan",
        "started_at": started,
        "ended_at": now_iso(),
        "command": command_line(),
        "points_file": {"path": str(args.points), "sha256": sha256_file(args.points)},
        "options": {"only": sorted(only), "use_cache": not args.no_cache, "installed_stack": args.installed_stack},
        "planner": {
            "method_version": METHOD_VERSION,
            "cache_dir": str(cache_dir()),
            "cuda_context_gib": CUDA_CONTEXT_GIB,
            "allocator": "replayed per step (mixtral_ft.plan.allocator)",
        },
        "environment": environment(),
        "summary": summary,
        "rows": [r.as_dict() for r in rows],
    }
    atomic_write_text(out / "results.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "results.md", table)
    manifest_keys = ("kind", "started_at", "ended_at", "command", "points_file", "options", "planner", "environment")
    write_manifest(out / "manifest.json", {k: record[k] for k in manifest_keys})
    print(table)
    if args.bands:
        print("ROWS = " + json.dumps(summary["bands"], indent=4))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = _arguments()
    args = ap.parse_args(argv)

    try:
        data = load_points(args.points)
    except PointsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    points = data["points"]
    if args.check:
        kinds = {k: sum(p["kind"] == k for p in points) for k in KINDS}
        print(
            f"{args.points}: {len(points)} points ({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
            f"{sum(p['fully_known'] for p in points)} fully known, {len(data['models'])} models"
        )
        return 0
    only = {x for x in args.only.split(",") if x}
    unknown = only - {p["id"] for p in points}
    if unknown:
        ap.error(f"unknown point id(s): {', '.join(sorted(unknown))}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixtral_ft.util.provenance import now_iso, set_command_line

    set_command_line([sys.executable, *sys.argv] if argv is None else ["bench_plan.py", *argv])
    args.out.mkdir(parents=True, exist_ok=True)
    started = now_iso()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        rows = run_points(
            data,
            Path(tmp),
            only=only or None,
            use_cache=not args.no_cache,
            say=say,
            as_published=not args.installed_stack,
        )
    if not only:
        rows += shipped_rows(data, use_cache=not args.no_cache, say=say)
    summary = _write_results(args.out, args, only, started, rows)
    return 1 if summary["planner_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
