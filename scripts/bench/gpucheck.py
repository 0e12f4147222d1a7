"""``make gpu-check``: the parts of the check for a bare GPU machine, and the summary they fill.

``scripts/gpu_check.py run`` runs each part in a process of its own (a crash, an out-of-memory or a
hang ends that part only, and each starts with the whole card), under a time cap, and writes
``$OUT/gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` after every part
(docs/design/gpu-check.md). The parts, in order:

- ``env``: versions and where each package came from (wheelhouse or image), the card, the CUDA
  library bitsandbytes loaded and a 4-bit round trip through it, whether flash-attn imports;
- ``tests``: the gpu test tier (``tests/test_gpu.py``) but the two tests the parts below cover:
  mixft's preflight leaves its process without a CUDA context, the 4-bit plan on CUDA, Axolotl's
  expert hook on CUDA;
- ``train``: the tiny Mixtral trained for a few steps through ``mixft train rg --profile
  h100-80gb --probe``: real Axolotl, experts 4-bit through ``quantize_moe_experts``, the LoRA
  kernels, flash attention where flash-attn imports and sdpa otherwise (said in the row);
- ``infer``: the tiny Mixtral loaded for inference in 4-bit with its experts quantized
  (``models/loading.py``), with the adapter ``train`` wrote, and a greedy generation;
- ``stepbench``: Mixtral-8x7B's widths at 1 and 2 layers, each (task, profile) micro batch and
  LoRA on the experts (``bench/stepbench.py``): peak memory and s/step, read at 32 layers, beside
  ``mixft plan`` for the same config, in parts.

Each part function takes the run's context and a ``save`` callback for what it has so far, and
returns its result; torch and the libraries are imported inside the functions, so the parent process
that runs them never loads torch (nor holds a CUDA context).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

GIB = 2**30
SUMMARY_SCHEMA = "mixft-gpu-check/v2"
PART_ORDER = ("env", "tests", "train", "infer", "stepbench")
WHAT = {
    "env": "versions, the card, bitsandbytes' CUDA library, flash-attn",
    "tests": "gpu tier: no CUDA context after preflight (b), 4-bit plan and Axolotl's expert hook on CUDA",
    "train": "(a) tiny Mixtral through mixft train --profile h100-80gb --probe (Axolotl)",
    "infer": "(c) tiny Mixtral, 4-bit inference with the experts quantized",
    "stepbench": "(d) full-width Mixtral at 1 and 2 layers vs mixft plan; (e) expert LoRA",
}
# Seconds a part may run, and the least that must be left of the budget to start it.
PART_CAP_S = {"env": 90, "tests": 180, "train": 240, "infer": 90, "stepbench": 420}
PART_MIN_S = {"env": 10, "tests": 30, "train": 60, "infer": 20, "stepbench": 120}
# The two gpu-tier tests that the train and stepbench parts cover (make test-gpu runs them).
GPU_TESTS_DESELECT = "not trains_with_gpu_profile and not full_width"
ENV_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "axolotl",
    "trl",
    "datasets",
    "tokenizers",
    "huggingface-hub",
    "safetensors",
    "numpy",
    "triton",
    "torchao",
    "kernels",
    "flash-attn",
    "pytest",
    "typer",
    "click",
    "fsspec",
    "wandb",
)
TINY_EXPERT_TENSORS = 4  # the tiny Mixtral: 2 layers x (gate_up_proj, down_proj)
TINY_LINEARS = 8  # 2 layers x q/k/v/o
LORA_KERNEL_LINES = ("Patched attention class with LoRA optims", "LoRA kernels:")
# Usable memory of the card each profile is sized for (GiB as torch reports total_memory).
CARD_GIB = {"a100-80gb": 79.2, "h100-80gb": 79.2, "multi-gpu": 79.2, "a100-40gb": 39.4}

Save = Callable[[dict[str, Any]], None]


def _cuda_device(ctx: dict[str, Any]) -> bool:
    return ctx["device"] == "cuda"


def child_env(repo: Path, site_dirs: list[str]) -> dict[str, str]:
    """The environment of every process the check starts: the wheelhouse first on the path, then the
    working tree's mixtral_ft and bench; no Hub, no telemetry, no W&B."""
    path = [*site_dirs, str(repo / "src"), str(repo / "scripts")]
    if os.environ.get("PYTHONPATH"):
        path.append(os.environ["PYTHONPATH"])
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(path),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        AXOLOTL_DO_NOT_TRACK="1",
        DO_NOT_TRACK="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )


# --- env --------------------------------------------------------------------------------------------


def _packages(site_dirs: list[str]) -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {}
    for name in ENV_PACKAGES:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            out[name] = None
            continue
        where = str(dist.locate_file(""))
        carried = any(where.startswith(s) for s in site_dirs)
        out[name] = {"version": dist.version, "from": "wheelhouse" if carried else "image"}
    return out


def _import_error(module: str) -> str | None:
    import importlib

    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - absent, or built for another torch (an undefined symbol)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return None


def _bnb_round_trip(device: str) -> dict[str, Any]:
    """The native library bitsandbytes loaded, and nf4 quantize/dequantize of a random matrix there."""
    import bitsandbytes.functional as F
    import torch
    from bitsandbytes import cextension

    x = torch.randn(256, 256, device=device, dtype=torch.bfloat16)
    q, state = F.quantize_4bit(x, quant_type="nf4")
    err = float((F.dequantize_4bit(q, state) - x).float().norm() / x.float().norm())
    lib = getattr(getattr(cextension, "lib", None), "_lib", None)
    return {"library": Path(getattr(lib, "_name", "?")).name, "nf4_relative_error": round(err, 4)}


def part_env(ctx: dict[str, Any], save: Save) -> dict[str, Any]:
    import platform

    import torch

    rec: dict[str, Any] = {"python": platform.python_version(), "packages": _packages(ctx["site_dirs"])}
    rec["torch_cuda"] = torch.version.cuda
    rec["cuda_available"] = torch.cuda.is_available()
    if rec["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        rec["device"] = {
            "name": props.name,
            "total_gib": round(props.total_memory / GIB, 2),
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
        }
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        rec["nvidia_smi"] = smi.stdout.strip().splitlines()[:1]
    save(rec)
    rec["bitsandbytes"] = _bnb_round_trip(ctx["device"])
    rec["flash_attn_error"] = _import_error("flash_attn")
    rec["attention"] = "flash_attention_2" if rec["flash_attn_error"] is None else "sdpa"
    rec["axolotl_error"] = _import_error("axolotl.train")
    return rec


def env_problems(rec: dict[str, Any], device: str) -> list[str]:
    out = []
    if device == "cuda" and not rec.get("cuda_available"):
        out.append("env: torch sees no CUDA device")
    lib = (rec.get("bitsandbytes") or {}).get("library", "")
    if device == "cuda" and "cuda" not in lib:
        out.append(
            f"env: bitsandbytes loaded {lib or 'no library'}, not a CUDA one (torch CUDA {rec.get('torch_cuda')})"
        )
    if rec.get("axolotl_error"):
        out.append(f"env: Axolotl does not import: {rec['axolotl_error']}")
    return out


# --- tests ------------------------------------------------------------------------------------------


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts from pytest's ``--junitxml`` file, with each skip reason and each failure's first line."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    skipped: dict[str, int] = {}
    failures: list[str] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            counts["tests"] += 1
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            for tag, key in (("failure", "failed"), ("error", "errors")):
                if (el := case.find(tag)) is not None:
                    counts[key] += 1
                    message = (el.get("message") or "").splitlines()
                    failures.append(f"{name}: {message[0][:200] if message else ''}")
                    break
            else:
                if (el := case.find("skipped")) is not None:
                    counts["skipped"] += 1
                    reason = (el.get("message") or "").strip()
                    skipped[reason] = skipped.get(reason, 0) + 1
                else:
                    counts["passed"] += 1
    return {**counts, "skipped_reasons": skipped, "failures": failures}


def part_tests(ctx: dict[str, Any], save: Save) -> dict[str, Any]:
    repo, work = Path(ctx["repo"]), Path(ctx["work"])
    junit = work / "gpu-tests.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-k", GPU_TESTS_DESELECT, "-p", "no:cacheprovider"]
    cmd += ["-q", "-rs", f"--junitxml={junit}", str(repo / "tests" / "test_gpu.py")]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    print(proc.stdout[-20000:], proc.stderr[-20000:], sep="\n", file=sys.stderr)
    result: dict[str, Any] = {"exit_status": proc.returncode, "deselected": GPU_TESTS_DESELECT}
    if junit.exists():
        result.update(parse_junit(junit))
    else:
        result["failures"] = [f"pytest wrote no report (exit status {proc.returncode})"]
    return result


def tests_problems(rec: dict[str, Any]) -> list[str]:
    out = [f"gpu test: {f}" for f in rec.get("failures", [])]
    if rec.get("exit_status") not in (0, 5, None) and not rec.get("failures"):
        out.append(f"gpu tests: pytest exit status {rec['exit_status']}")
    return out


# --- train (a) and infer (c) ------------------------------------------------------------------------


def mixft(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """``mixft ARGS`` from the working tree (``python -m mixtral_ft.cli``), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mixtral_ft.cli", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ensure_inputs(repo: Path, work: Path) -> tuple[Path, Path]:
    """The tiny Mixtral and a prepared RG split of the bundled sample, built once under ``work``."""
    model, data = work / "tiny-mixtral", work / "rg-data"
    if not (model / "config.json").exists():
        proc = mixft(["models", "tiny-mixtral", "--out", str(model), "--force"])
        if proc.returncode != 0:
            raise RuntimeError(f"mixft models tiny-mixtral failed: {proc.stderr.strip().splitlines()[-1:]}")
    if not (data / "train.jsonl").exists():
        proc = mixft(["prepare", "rg", str(repo / "data" / "sample_qa.jsonl"), "--out", str(data), "--test-size", "8"])
        if proc.returncode != 0:
            raise RuntimeError(f"mixft prepare rg failed: {proc.stderr.strip().splitlines()[-1:]}")
    return model, data


def train_overrides(steps: int, attention: str | None) -> list[str]:
    """``--set`` values for a short run of the tiny model: no evaluation, no checkpoint, no watchdog
    (a random model's loss is high), 1024-token packs; ``attention`` replaces the profile's."""
    sets = [
        f"max_steps={steps}",
        "num_epochs=10",
        "sequence_len=1024",
        "test_datasets=null",
        "evals_per_epoch=null",
        "saves_per_epoch=null",
        "loss_watchdog_threshold=null",
        "loss_watchdog_patience=null",
    ]
    if attention:
        sets.append(f"attn_implementation={attention}")
    return [a for s in sets for a in ("--set", s)]


def gpu_processes() -> dict[int, int] | None:
    """``pid -> MiB`` of the processes holding a CUDA context, as ``nvidia-smi`` lists them (None when
    it cannot be asked)."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out = {}
    for line in proc.stdout.strip().splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit():
            out[int(pid)] = int(mib.strip()) if mib.strip().isdigit() else 0
    return out


def _watch_gpu(proc: subprocess.Popen, watch: bool) -> dict[str, Any]:
    """Wait for ``proc``; meanwhile (``watch``) list the processes on the GPU every half second: mixft's
    own process must never be among them (its preflight reads free memory without a CUDA context)."""
    seen: dict[int, int] = {}
    asked = False
    while proc.poll() is None:
        if watch and (now := gpu_processes()) is not None:
            asked = True
            for pid, mib in now.items():
                seen[pid] = max(seen.get(pid, 0), mib)
        time.sleep(0.5)
    return {
        "mixft_pid": proc.pid,
        "gpu_processes_mib": {str(k): v for k, v in seen.items()},
        "mixft_held_cuda": (proc.pid in seen) if asked and seen else None,
    }


def train_tiny(
    model: Path, data: Path, run_dir: Path, profile: str, attention: str | None, steps: int = 4
) -> dict[str, Any]:
    """``mixft train rg --probe`` on the tiny Mixtral; what took effect, read back from the probe,
    the run's manifest (with the plan's figures) and Axolotl's log; on a GPU profile, whether mixft's
    own process ever held a CUDA context while Axolotl trained (nvidia-smi)."""
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    args = ["train", "rg", "--data", str(data), "--profile", profile, "--base-model", str(model)]
    cmd = [sys.executable, "-m", "mixtral_ft.cli", *args, "--run-dir", str(run_dir), "--probe"]
    out_path = run_dir.with_name(run_dir.name + ".out")
    with out_path.open("w+", encoding="utf-8") as out:
        proc = subprocess.Popen([*cmd, *train_overrides(steps, attention)], stdout=out, stderr=subprocess.STDOUT)
        watched = _watch_gpu(proc, watch=profile != "cpu")
        out.seek(0)
        text = out.read()
    print(text[-20000:], file=sys.stderr)
    row: dict[str, Any] = {"exit_status": proc.returncode, "profile": profile, "attention_override": attention}
    row.update(watched, output_tail=text.strip().splitlines()[-12:])
    if proc.returncode != 0:
        row["error"] = (text.strip().splitlines() or ["(no output)"])[-1][:300]
    probe_path = run_dir / "output" / "mixft_probe.json"
    if probe_path.exists():
        probe = json.loads(probe_path.read_text(encoding="utf-8"))
        row.update({f"probe_{k}": probe.get(k) for k in ("model", "device", "config", "errors")})
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        row["probe_summary"] = json.loads(manifest.read_text(encoding="utf-8")).get("probe")  # with the plan's figures
    log = run_dir / "train.log"
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    row["lora_kernel_lines"] = sorted(
        {ln.split("] ")[-1][:160] for ln in lines if any(k in ln for k in LORA_KERNEL_LINES)}
    )
    row["expert_quant_lines"] = sorted({ln.split("] ")[-1][:160] for ln in lines if "MoE expert" in ln})
    row["adapter"] = str(run_dir / "output") if (run_dir / "output" / "adapter_config.json").exists() else None
    return row


def part_train(ctx: dict[str, Any], save: Save) -> dict[str, Any]:
    repo, work = Path(ctx["repo"]), Path(ctx["work"])
    model, data = ensure_inputs(repo, work)
    cuda = _cuda_device(ctx)
    attention = None
    note = None
    if cuda and _import_error("flash_attn") is not None:
        attention = "sdpa"
        note = (
            "flash-attn does not import here (no wheel for this torch, no network to build one): the run uses "
            "sdpa, and Axolotl trains sdpa packs as separate rows (multipack_real_batches)"
        )
    row = train_tiny(model, data, work / "train-run", ctx["profile"], attention, steps=ctx["train_steps"])
    row["attention_note"] = note
    return row


def train_problems(rec: dict[str, Any], device: str) -> list[str]:
    out = []
    if rec.get("exit_status") != 0:
        out.append(f"train: mixft train exited {rec.get('exit_status')}: {rec.get('error', '')}")
    summary = rec.get("probe_summary") or {}
    out += [f"train: probe warning: {w}" for w in summary.get("warnings") or []]
    model = rec.get("probe_model") or {}
    if device == "cuda":
        if model.get("quantized_expert_tensors") != TINY_EXPERT_TENSORS or model.get("unquantized_expert_tensors"):
            out.append(
                f"train: {model.get('quantized_expert_tensors')} of {TINY_EXPERT_TENSORS} expert tensors quantized "
                "by quantize_moe_experts"
            )
        if not rec.get("lora_kernel_lines"):
            out.append("train: Axolotl's log does not say the LoRA kernels were patched in")
        if rec.get("mixft_held_cuda"):
            out.append("train: mixft's own process held a CUDA context while Axolotl trained (nvidia-smi)")
    return out


def part_infer(ctx: dict[str, Any], save: Save) -> dict[str, Any]:
    import torch

    from mixtral_ft.models.loading import load_for_inference
    from mixtral_ft.models.quant import stored_bytes

    repo, work = Path(ctx["repo"]), Path(ctx["work"])
    model_dir, _data = ensure_inputs(repo, work)
    adapter = work / "train-run" / "output"
    adapter_arg = str(adapter) if (adapter / "adapter_config.json").exists() else None
    cuda = _cuda_device(ctx)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    loaded = load_for_inference(str(model_dir), adapter=adapter_arg, load_in_4bit=True, device=ctx["device"])
    tok, model = loaded.tokenizer, loaded.model
    prompt = "Context: The museum opens at 9 am.\nQuestion: When does the museum open?\nAnswer:"
    ids = tok(prompt, return_tensors="pt").to(model.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    new = out[0, ids["input_ids"].shape[1] :]
    stored = stored_bytes(model)
    return {
        "adapter": adapter_arg,
        "layout": loaded.layout.to_dict(),
        "quantization": loaded.quantization,
        "lora_modules": len(loaded.lora_modules),
        "stored": stored,
        "new_tokens": int(new.numel()),
        "tokens_per_s": round(new.numel() / seconds, 1) if seconds else None,
        "text": tok.decode(new, skip_special_tokens=True)[:200],
        "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 4) if cuda else None,
        "device": str(model.device),
    }


def infer_problems(rec: dict[str, Any]) -> list[str]:
    out = []
    q = rec.get("quantization") or {}
    if q.get("expert_tensors") != q.get("expert_tensors_4bit") or not q.get("expert_tensors"):
        out.append(f"infer: {q.get('expert_tensors_4bit')} of {q.get('expert_tensors')} expert tensors in 4-bit")
    if not rec.get("new_tokens"):
        out.append("infer: nothing generated")
    if rec.get("adapter") and not rec.get("lora_modules"):
        out.append("infer: the adapter loaded no LoRA module")
    return out


# --- stepbench (d), (e) -----------------------------------------------------------------------------


def part_stepbench(ctx: dict[str, Any], save: Save) -> dict[str, Any]:
    from bench.membench import fits_for
    from bench.stepbench import StepBenchOptions, render_cases, run_stepbench

    cases = tuple(render_cases([tuple(c) for c in ctx["cases"]], tuple(ctx["overrides"])))
    opts = StepBenchOptions(
        layers=tuple(ctx["layers"]),
        cases=cases,
        out=Path(ctx["work"]),
        width=ctx["width"],
        device=ctx["device"],
        steps=ctx["steps"],
        warmup=ctx["warmup"],
        plan=True,
    )

    def on_row(rows: list[dict[str, Any]]) -> None:
        save({"rows": rows, "fits": fits_for(rows), "plans": {}})

    return run_stepbench(opts, say=lambda m: print(m, file=sys.stderr, flush=True), on_row=on_row)


def _measured_groups(row: dict[str, Any]) -> dict[str, float | None]:
    """A row's memory split as the plan's groups are (stepbench.PLAN_PARTS): weights after loading, state
    kept after the steps (LoRA, optimizer), transient above that at the peak."""
    load, after, peak = row.get("after_load_gib"), row.get("after_steps_gib"), row.get("peak_gib")
    return {
        "weights": load,
        "state": None if load is None or after is None else after - load,
        "transient": None if after is None or peak is None else peak - after,
    }


def _err(measured: float | None, planned: float | None) -> float | None:
    return None if not measured or planned is None else round((planned - measured) / measured, 4)


def plan_comparison(bench: dict[str, Any], at: int = 32) -> list[dict[str, Any]]:
    """One row per (case, layers) measured, and per case at ``at`` layers (the measured line read
    there): measured and planned peaks, allocated and reserved, with the plan's relative error, and
    the measured split beside the plan's groups."""
    out = []
    plans = bench.get("plans") or {}
    for row in bench.get("rows", []):
        if not row.get("ok"):
            continue
        plan = (plans.get(row["case"]) or {}).get(str(row["layers"])) or {}
        measured = _measured_groups(row)
        out.append(
            {
                "case": row["case"],
                "layers": row["layers"],
                "measured_peak_gib": row.get("peak_gib"),
                "planned_peak_gib": plan.get("allocated_peak_gib"),
                "error_peak": _err(row.get("peak_gib"), plan.get("allocated_peak_gib")),
                "measured_reserved_gib": row.get("peak_reserved_gib"),
                "planned_reserved_gib": plan.get("reserved_peak_gib"),
                "error_reserved": _err(row.get("peak_reserved_gib"), plan.get("reserved_peak_gib")),
                "groups": {
                    g: {"measured": measured[g], "planned": (plan.get("groups_gib") or {}).get(g)} for g in measured
                },
                "plan_error": plan.get("error"),
            }
        )
    for case, fit in (bench.get("fits") or {}).items():
        plan = (plans.get(case) or {}).get(str(at)) or {}
        peak, reserved = fit.get("peak_gib") or {}, fit.get("peak_reserved_gib") or {}
        if peak.get("at_layers") != at:
            continue
        out.append(
            {
                "case": case,
                "layers": at,
                "extrapolated": True,
                "measured_peak_gib": peak.get("value_at"),
                "planned_peak_gib": plan.get("allocated_peak_gib"),
                "error_peak": _err(peak.get("value_at"), plan.get("allocated_peak_gib")),
                "measured_reserved_gib": reserved.get("value_at"),
                "planned_reserved_gib": plan.get("reserved_peak_gib"),
                "error_reserved": _err(reserved.get("value_at"), plan.get("reserved_peak_gib")),
                "measured_per_layer_gib": peak.get("per_layer"),
                "step_s_at": (fit.get("step_s") or {}).get("value_at"),
                "plan_error": plan.get("error"),
            }
        )
    return out


def expert_lora_comparison(comparison: list[dict[str, Any]], variant: str = "+expert-lora") -> list[dict[str, Any]]:
    """LoRA on the experts: what it adds to the peak, measured (case with it less the case without, same
    layers) and planned (the same difference of plans, which is plan/expert_lora.py's term)."""
    by_key = {(c["case"], c["layers"]): c for c in comparison}
    out = []
    for (case, layers), with_it in by_key.items():
        if not case.endswith(variant):
            continue
        without = by_key.get((case.removesuffix(variant), layers))
        if without is None:
            continue

        def delta(key: str, a: dict[str, Any] = with_it, b: dict[str, Any] = without) -> float | None:
            return None if a.get(key) is None or b.get(key) is None else round(a[key] - b[key], 3)

        measured, planned = delta("measured_peak_gib"), delta("planned_peak_gib")
        out.append(
            {
                "case": case,
                "layers": layers,
                "extrapolated": bool(with_it.get("extrapolated")),
                "measured_delta_gib": measured,
                "planned_delta_gib": planned,
                "error": _err(measured, planned),
            }
        )
    return out


def stepbench_problems(bench: dict[str, Any], at_layers: int = 32) -> list[str]:
    """A failed case, experts not in 4-bit, a plan that failed, a case whose reserved peak read at 32
    layers exceeds the card its profile is sized for."""
    problems = []
    for row in bench.get("rows", []):
        where = f"stepbench: {row['case']} at {row['layers']} layer(s)"
        if not row.get("ok"):
            problems.append(f"{where}: {row.get('error', 'failed')}")
        q = row.get("quantization") or {}
        if q.get("expert_tensors") and q.get("expert_tensors_4bit") != q.get("expert_tensors"):
            problems.append(
                f"{where}: {q.get('expert_tensors_4bit')} of {q.get('expert_tensors')} expert tensors in 4-bit"
            )
    for case, depths in (bench.get("plans") or {}).items():
        for depth, plan in depths.items():
            if plan.get("error"):
                problems.append(f"stepbench: plan of {case} at {depth} layers failed: {plan['error']}")
    for case, fit in (bench.get("fits") or {}).items():
        profile = case.split("/", 1)[-1].split("+", 1)[0]
        peak = fit.get("peak_reserved_gib") or fit.get("peak_gib") or {}
        card = CARD_GIB.get(profile)
        if card and peak.get("at_layers") == at_layers and peak.get("value_at", 0) > card:
            problems.append(
                f"stepbench: {case}: peak read at {at_layers} layers is {peak['value_at']:.1f} GiB, "
                f"over the {card} GiB of the card the profile is sized for"
            )
    return problems


PARTS: dict[str, Callable[[dict[str, Any], Save], dict[str, Any]]] = {
    "env": part_env,
    "tests": part_tests,
    "train": part_train,
    "infer": part_infer,
    "stepbench": part_stepbench,
}


def part_problems(name: str, result: dict[str, Any], device: str) -> list[str]:
    """What a finished part's result says is wrong (a failed part's own error is reported apart)."""
    if name == "env":
        return env_problems(result, device)
    if name == "tests":
        return tests_problems(result)
    if name == "train":
        return train_problems(result, device)
    if name == "infer":
        return infer_problems(result)
    if name == "stepbench":
        return stepbench_problems(result)
    return []


# --- the summary ------------------------------------------------------------------------------------

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "started_at": str,
    "ended_at": (str, type(None)),
    "wall_s": (int, float, type(None)),
    "options": dict,
    "site": dict,
    "parts": dict,
    "ok": bool,
    "problems": list,
}
STATUSES = ("ok", "failed", "skipped", "running")


def validate_summary(summary: dict[str, Any]) -> list[str]:
    """Schema problems of a ``gpu_check.json`` summary (empty when it is well formed)."""
    out = []
    for key, types in REQUIRED_KEYS.items():
        if key not in summary:
            out.append(f"{key}: missing")
        elif not isinstance(summary[key], types):
            out.append(f"{key}: expected {types}, got {type(summary[key]).__name__}")
    if "schema" in summary and summary["schema"] != SUMMARY_SCHEMA:
        out.append(f"schema: expected {SUMMARY_SCHEMA}")
    for name, part in (summary.get("parts") or {}).items():
        if name not in PART_ORDER:
            out.append(f"parts.{name}: not a part of the check")
        elif not isinstance(part, dict) or part.get("status") not in STATUSES:
            out.append(f"parts.{name}: status must be one of {', '.join(STATUSES)}")
        elif part["status"] == "failed" and not part.get("error"):
            out.append(f"parts.{name}: a failed part names its error")
    return out


def _f(v: Any, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.1%}"


def _part_line(name: str, part: dict[str, Any]) -> str:
    r = part.get("result") or {}
    if part["status"] != "ok":
        said = part.get("error") or part.get("why") or ""
    elif name == "env":
        dev = r.get("device") or {}
        said = f"{dev.get('name', 'no CUDA device')}, torch {(r.get('packages') or {}).get('torch', {}).get('version')} CUDA {r.get('torch_cuda')}, attention {r.get('attention')}"
    elif name == "tests":
        said = f"{r.get('passed', 0)} passed, {r.get('failed', 0)} failed, {r.get('errors', 0)} errors, {r.get('skipped', 0)} skipped"
    elif name == "train":
        m = r.get("probe_model") or {}
        said = f"exit {r.get('exit_status')}, attention {m.get('attn_implementation')}, experts 4-bit {m.get('quantized_expert_tensors')}, LoRA kernels {'patched' if r.get('lora_kernel_lines') else 'not seen'}"
    elif name == "infer":
        q = r.get("quantization") or {}
        said = f"experts 4-bit {q.get('expert_tensors_4bit')}/{q.get('expert_tensors')}, {r.get('new_tokens')} tokens, adapter {'yes' if r.get('adapter') else 'no'}"
    else:
        rows = r.get("rows") or []
        said = f"{sum(1 for x in rows if x.get('ok'))} of {len(rows)} cases ran"
    return f"| {name} | {WHAT[name]} | {part['status']} | {_f(part.get('wall_s'), '.0f')} | {str(said).replace('|', '/')[:300]} |"


def _comparison_lines(comparison: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| case | layers | peak measured | planned | error | reserved measured | planned | error "
        "| weights m / p | state m / p | transient m / p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for c in comparison:
        groups = c.get("groups") or {}
        cells = [
            f"{_f(g.get('measured'))} / {_f(g.get('planned'))}"
            for g in (groups.get(k) or {} for k in ("weights", "state", "transient"))
        ]
        if c.get("extrapolated"):
            cells = [
                "line read at 32",
                f"{_f(c.get('measured_per_layer_gib'), '.3f')} GiB/layer",
                f"{_f(c.get('step_s_at'))} s/step",
            ]
        lines.append(
            f"| {c['case']} | {c['layers']} | {_f(c.get('measured_peak_gib'))} | {_f(c.get('planned_peak_gib'))} "
            f"| {_pct(c.get('error_peak'))} | {_f(c.get('measured_reserved_gib'))} | {_f(c.get('planned_reserved_gib'))} "
            f"| {_pct(c.get('error_reserved'))} | " + " | ".join(cells) + " |"
        )
    return lines


def render_markdown(summary: dict[str, Any]) -> str:
    """``gpu_check.md``: the parts, then the step benchmark and its plan comparison, then the problems."""
    from bench.membench import render_table

    parts = summary.get("parts") or {}
    env = (parts.get("env") or {}).get("result") or {}
    head = (env.get("device") or {}).get("name", "no CUDA device")
    lines = [f"# mixft gpu-check on {head}: {'ok' if summary.get('ok') else 'problems'}", ""]
    lines += ["| part | what | status | s | result |", "|---|---|---|---:|---|"]
    lines += [_part_line(n, parts[n]) for n in PART_ORDER if n in parts]
    train = (parts.get("train") or {}).get("result") or {}
    if train.get("attention_note"):
        lines += ["", f"Attention: {train['attention_note']}."]
    bench = (parts.get("stepbench") or {}).get("result") or {}
    if bench.get("rows"):
        lines += ["", "## Step benchmark (GiB, s)", "", render_table(bench["rows"], bench.get("fits") or {})]
        comparison = summary.get("plan_comparison") or []
        if comparison:
            lines += ["## Planned vs measured (GiB; error = (planned - measured) / measured)", ""]
            lines += _comparison_lines(comparison)
        experts = summary.get("expert_lora") or []
        if experts:
            lines += ["", "## LoRA on the experts: what it adds to the peak (GiB)", ""]
            lines += ["| case | layers | measured | planned | error |", "|---|---:|---:|---:|---:|"]
            lines += [
                f"| {e['case']} | {e['layers']}{' (line)' if e['extrapolated'] else ''} | {_f(e['measured_delta_gib'])} "
                f"| {_f(e['planned_delta_gib'])} | {_pct(e['error'])} |"
                for e in experts
            ]
    if summary.get("problems"):
        lines += ["", "## Problems", ""] + [f"- {p}" for p in summary["problems"]]
    return "\n".join(lines) + "\n"
