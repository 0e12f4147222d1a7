"""Training memory and throughput per layer count: the engine behind ``scripts/bench_train.py``.

A Mixtral with the real widths and random weights is built with 1, 2, 4 ... layers; the RG config
runs a few optimizer steps on it under a hardware profile through ``mixft train --probe``; the probe
says what took effect (4-bit experts, flash attention) and measures peak memory and tokens/s. A
straight line through (layers, peak memory) and (layers, seconds per step) is then read at 32
layers: the numbers a memory planner needs for Mixtral-8x7B, measured rather than guessed.

Only the orchestration and the arithmetic live here; the model is built by
:func:`mixtral_ft.models.tiny.build_tiny_mixtral` and trained by :func:`mixtral_ft.train.api.run`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

MIXTRAL_8X7B_LAYERS = 32


@dataclass(frozen=True)
class BenchCase:
    layers: int
    profile: str


def bench_overrides(steps: int, warmup: int, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``--set`` values that turn the RG config into a fixed-length measurement run.

    No evaluation and no checkpoints inside the measured steps (a save would land in the next
    step's interval); the loss watchdog off, because a random model starts at ln(32000) ~ 10.4;
    epochs high enough that ``max_steps`` ends the run, whatever the data size.
    """
    return (
        f"max_steps={warmup + steps}",
        "num_epochs=1000",
        "test_datasets=null",
        "evals_per_epoch=null",
        "eval_steps=null",
        "saves_per_epoch=null",
        "save_steps=null",
        "save_strategy='no'",  # quoted: a bare no is YAML for false
        "loss_watchdog_threshold=null",
        "loss_watchdog_patience=null",
        "warmup_steps=0",
    ) + tuple(extra)


def synthetic_rg_rows(sample: list[dict[str, Any]], min_chars: int, snippets: int = 8) -> list[dict[str, Any]]:
    """RG rows with multi-snippet contexts, built from the bundled Q&A until ``min_chars`` of text.

    Row j answers sample question j (mod n) with its own context followed by the next contexts in
    the file, as a retriever returning several passages would; each pass over the sample adds one
    more snippet, so rows never repeat (``prepare rg`` would drop duplicates). Enough text means
    one epoch holds every measured step, so no epoch boundary (data-loader restart) falls inside
    the measurement.
    """
    if not sample:
        raise ValueError("no sample rows to build benchmark rows from")
    as_list = lambda c: list(c) if isinstance(c, list) else [str(c)]  # noqa: E731
    n = len(sample)
    rows: list[dict[str, Any]] = []
    chars = j = 0
    while chars < min_chars:
        base = sample[j % n]
        k = snippets + j // n
        context = [snip for m in range(k) for snip in as_list(sample[(j + m) % n]["context"])]
        row = {"id": f"bench-{j:06d}", "question": base["question"], "answer": base["answer"], "context": context}
        chars += sum(len(c) for c in context) + len(row["question"]) + len(row["answer"])
        rows.append(row)
        j += 1
    return rows


@dataclass
class Fit:
    """``y = intercept + slope * layers`` by least squares, and its value at ``at`` layers."""

    intercept: float
    slope: float
    at: int
    value_at: float
    points: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "intercept": round(self.intercept, 4),
            "per_layer": round(self.slope, 4),
            "at_layers": self.at,
            "value_at": round(self.value_at, 4),
            "points": self.points,
        }


def fit_linear(xs: Sequence[float], ys: Sequence[float | None], at: int = MIXTRAL_8X7B_LAYERS) -> Fit | None:
    """Least-squares line; None with fewer than two distinct x values."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]
    if len({x for x, _ in pairs}) < 2:
        return None
    n = len(pairs)
    mx = sum(x for x, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    slope = sum((x - mx) * (y - my) for x, y in pairs) / sxx
    intercept = my - slope * mx
    return Fit(intercept=intercept, slope=slope, at=at, value_at=intercept + slope * at, points=n)


def fits_for(rows: list[dict[str, Any]], at: int = MIXTRAL_8X7B_LAYERS) -> dict[str, dict[str, Any]]:
    """Per profile: peak memory and step time against layers, read at ``at`` layers.

    Tokens per second at ``at`` layers follow from the step-time line, since every step of a
    packed, padded run handles the same number of token slots.
    """
    out: dict[str, dict[str, Any]] = {}
    for profile in sorted({r["profile"] for r in rows}):
        ok = [r for r in rows if r["profile"] == profile and r.get("ok")]
        entry: dict[str, Any] = {}
        mem = fit_linear([r["layers"] for r in ok], [r["peak_gib"] for r in ok], at)
        reserved = fit_linear([r["layers"] for r in ok], [r.get("peak_reserved_gib") for r in ok], at)
        step = fit_linear([r["layers"] for r in ok], [r["step_s"] for r in ok], at)
        if mem:
            entry["peak_gib"] = mem.as_dict()
        if reserved:
            entry["peak_reserved_gib"] = reserved.as_dict()
        if step:
            entry["step_s"] = step.as_dict()
            slots = [r["token_slots_per_s"] * r["step_s"] for r in ok if r.get("token_slots_per_s") and r.get("step_s")]
            if slots and step.value_at > 0:
                entry["token_slots_per_s_at_layers"] = round(sum(slots) / len(slots) / step.value_at, 1)
        out[profile] = entry
    return out


def _line(fit: dict[str, Any], unit_fmt: str) -> str:
    slope = fit["per_layer"]
    return f"{fit['intercept']:.3f} {'-' if slope < 0 else '+'} {abs(slope):{unit_fmt}} × layers"


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def render_table(rows: list[dict[str, Any]], fits: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per (profile, layers), then the extrapolation per profile.

    Memory is the CUDA allocator's peak (and, after loading, what is allocated) on GPU, and the
    process's peak resident set on CPU; "reserved" is the allocator's cache, closer to nvidia-smi.
    """
    lines = [
        "| profile | layers | params (B) | after load (GiB) | peak (GiB) | peak reserved (GiB) "
        "| s/step | token slots/s | trained tokens/s | attention | experts 4-bit | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        experts = (
            f"{r['experts_quantized']} quantized"
            if r.get("experts_quantized")
            else f"no ({r.get('experts_unquantized', 0)} in 16-bit)"
        )
        lines.append(
            f"| {r['profile']} | {r['layers']} | {_num(r.get('parameters_b'), '.3g')} | {_num(r.get('after_load_gib'), '.2f')} "
            f"| {_num(r.get('peak_gib'), '.2f')} | {_num(r.get('peak_reserved_gib'), '.2f')} | {_num(r.get('step_s'), '.2f')} "
            f"| {_num(r.get('token_slots_per_s'), ',.0f')} | {_num(r.get('trainable_tokens_per_s'), ',.0f')} "
            f"| {r.get('attn_implementation') or 'n/a'} | {experts} | {'ok' if r.get('ok') else r.get('error', 'failed')} |"
        )
    for profile, f in fits.items():
        if not f:
            lines.append(f"\n{profile}: fewer than two successful layer counts; nothing to extrapolate.")
            continue
        mem, step = f.get("peak_gib"), f.get("step_s")
        parts = []
        if mem:
            parts.append(f"peak ≈ {_line(mem, '.3f')} GiB → {mem['value_at']:.1f} GiB at {mem['at_layers']} layers")
        if step:
            parts.append(
                f"step ≈ {_line(step, '.4f')} s "
                f"→ {step['value_at']:.2f} s at {step['at_layers']} layers"
                + (
                    f" ({f['token_slots_per_s_at_layers']:,.0f} token slots/s)"
                    if f.get("token_slots_per_s_at_layers")
                    else ""
                )
            )
        lines.append(f"\n{profile}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


@dataclass
class BenchOptions:
    layers: tuple[int, ...]
    profiles: tuple[str, ...]
    out: Path
    width: str = "full"  # "full" (Mixtral-8x7B shapes) or "tiny"
    steps: int = 8
    warmup: int = 2
    overrides: tuple[str, ...] = ()
    keep_models: bool = False
    corpus: Path | None = None
    init_device: str | None = None
    verbose: bool = False  # stream Axolotl's output (it is always in each run's train.log)


def model_spec(width: str, layers: int):
    from mixtral_ft.models.tiny import TinyMixtralSpec, full_width_spec

    if width == "full":
        return full_width_spec(layers)
    if width == "tiny":
        return TinyMixtralSpec(num_hidden_layers=layers)
    raise ValueError(f"width must be 'full' or 'tiny', not {width!r}")


_BUILD = """
import json, sys
a = json.loads(sys.argv[1])
sys.path.insert(0, a["scripts"])
from mixtral_ft.models.tiny import build_tiny_mixtral
from bench.membench import model_spec
build_tiny_mixtral(a["out"], model_spec(a["width"], a["layers"]), sample_path=a["corpus"], force=True,
                   init_device=a["init_device"])
"""


def build_model_in_subprocess(out: Path, width: str, layers: int, corpus: Path | None, init_device: str | None) -> None:
    """Build the random model in a child process, so the GPU memory used to draw its weights is
    handed back to the driver before the measured training process starts."""
    import json
    import subprocess
    import sys

    from mixtral_ft.errors import ExternalCommandError

    args = {
        "scripts": str(Path(__file__).resolve().parents[1]),  # where the child finds this package
        "out": str(out),
        "width": width,
        "layers": layers,
        "corpus": str(corpus) if corpus else None,
        "init_device": init_device,
    }
    proc = subprocess.run([sys.executable, "-c", _BUILD, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ExternalCommandError(f"building the {width}-width {layers}-layer model failed: {tail}", proc.returncode)


def _error_line(log: Path) -> str:
    """The most telling line of a failed run's log (an OOM, an exception), or "" if there is none."""
    if not log.exists():
        return ""
    lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if any("out of memory" in ln.lower() for ln in lines):
        return "CUDA out of memory"
    for ln in reversed(lines):
        if "Error:" in ln or "Error(" in ln:
            return ln[:200]
    return ""


def run_case(case: BenchCase, model_dir: Path, data_dir: Path, opts: BenchOptions) -> dict[str, Any]:
    """One training run under the probe; a failed run (e.g. out of memory) is a row, not an exception."""
    from mixtral_ft.errors import MixftError
    from mixtral_ft.train.api import TrainRequest, run
    from mixtral_ft.train.probe_report import PROBE_FILE, read_probe, summarize
    from mixtral_ft.train.runner import run_streaming

    run_dir = opts.out / "runs" / f"{case.profile}-L{case.layers}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    req = TrainRequest(
        task="rg",
        data_dir=data_dir,
        profile=case.profile,
        run_dir=run_dir,
        base_model=str(model_dir),
        overrides=bench_overrides(opts.steps, opts.warmup, opts.overrides),
        probe=True,
    )
    row: dict[str, Any] = {"profile": case.profile, "layers": case.layers, "run_dir": str(run_dir), "ok": False}
    started = time.monotonic()
    try:
        run(req, runner=None if opts.verbose else partial(run_streaming, echo=False))
        row["ok"] = True
    except MixftError as exc:
        row["error"] = _error_line(run_dir / "train.log") or f"{type(exc).__name__}: {exc}"
    row["wall_s"] = round(time.monotonic() - started, 1)
    probe_path = run_dir / "output" / PROBE_FILE
    if probe_path.exists():
        probe = read_probe(probe_path)
        s = summarize(probe, warmup_steps=opts.warmup)
        model = probe.get("model") or {}
        row.update(
            parameters_b=round(model["parameters"] / 1e9, 6) if model.get("parameters") else None,
            trainable_parameters=model.get("trainable_parameters"),
            device=(probe.get("device") or {}).get("name") or s.device,
            **{
                k: getattr(s, k)
                for k in (
                    "measured_steps",
                    "step_s",
                    "token_slots_per_s",
                    "trainable_tokens_per_s",
                    "peak_gib",
                    "peak_reserved_gib",
                    "after_load_gib",
                    "parameter_gib",
                    "attn_implementation",
                    "flash_attention_in_effect",
                    "experts_quantized",
                    "experts_unquantized",
                    "linear_4bit_modules",
                    "warnings",
                )
            },
        )
        if row["ok"] and not s.measured_steps:
            row["ok"] = False
            row["error"] = "no measured steps (raise --steps)"
    return row


def run_bench(opts: BenchOptions, data_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Build each layer count once, run every profile on it, then fit. Returns the results record."""
    rows: list[dict[str, Any]] = []
    for layers in opts.layers:
        model_dir = opts.out / "models" / f"{opts.width}-L{layers}"
        if not (model_dir / "config.json").exists():
            say(f"building a {opts.width}-width Mixtral with {layers} layer(s) in {model_dir} ...")
            t0 = time.monotonic()
            build_model_in_subprocess(model_dir, opts.width, layers, opts.corpus, opts.init_device)
            say(f"  built in {time.monotonic() - t0:.0f} s")
        for profile in opts.profiles:
            say(f"training {opts.warmup}+{opts.steps} steps: profile {profile}, {layers} layer(s) ...")
            row = run_case(BenchCase(layers, profile), model_dir, data_dir, opts)
            rows.append(row)
            say(
                "  "
                + (
                    f"peak {_num(row.get('peak_gib'), '.2f')} GiB, {_num(row.get('step_s'), '.2f')} s/step, "
                    f"{_num(row.get('token_slots_per_s'), ',.0f')} token slots/s"
                    if row["ok"]
                    else f"FAILED: {row.get('error')}"
                )
            )
        if not opts.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)
    return {"rows": rows, "fits": fits_for(rows)}
