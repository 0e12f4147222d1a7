"""Training memory and throughput per layer count (numbers go in docs/benchmarks.md).

On a GPU box, with Axolotl installed and no network needed:

    .venv/bin/python scripts/bench_train.py --profile h100-80gb,a100-80gb --layers 1,2,4 --out out/bench-train

For each layer count it builds a Mixtral with the real widths (hidden 4096, 8 experts of 14336,
32k vocab) and random bf16 weights, runs the RG config (sequence_len 4096, packing, micro batch
per the profile, QLoRA with quantize_moe_experts) for --warmup + --steps optimizer steps through
`mixft train --probe`, and records peak GPU memory, seconds per step, token slots/s, and whether
the experts were quantized and flash attention was used. A straight line per profile is read at
32 layers (Mixtral-8x7B). Writes OUT/results.json, OUT/results.md and OUT/manifest.json; prints
the table. A run that fails (e.g. out of memory) is a row in the table, not the end of the bench.

The GPU profiles ask for attn_implementation: flash_attention_2, so `mixft train` refuses to start
without an importable flash-attn (docs/training.md, "Flash attention"); --set attn_implementation=sdpa
measures without it. On a bare GPU machine (one 10-minute call for everything), `make gpu-check` runs
the one-process form, scripts/bench/stepbench.py, beside `mixft plan` (docs/design/gpu-check.md).

Disk: a full-width model takes ~3.4 GB + 2.8 GB per layer while it is measured (deleted after,
unless --keep-models). Building one draws random weights on the GPU when there is one.

CPU smoke run (what the slow test does; tiny shapes, the cpu profile):

    .venv/bin/python scripts/bench_train.py --width tiny --profile cpu --layers 1,2 --steps 3 --warmup 1 --out /tmp/b
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("layer counts must be positive integers")
    return values


def _tokens_per_step(profile: str, out: Path, overrides: tuple[str, ...]) -> int:
    """Sequence positions one optimizer step consumes under ``profile`` (RG config, with --set)."""
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    v = render(
        RenderRequest(
            task="rg", data_dir=out / "data", profile=profile, run_dir=out / "runs" / "x", overrides=overrides
        )
    ).values
    return int(v["micro_batch_size"]) * int(v.get("gradient_accumulation_steps") or 1) * int(v["sequence_len"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="h100-80gb", help="comma-separated hardware profiles (configs/profiles)")
    ap.add_argument("--layers", type=_ints, default=(1, 2, 4), help="comma-separated layer counts (default 1,2,4)")
    ap.add_argument(
        "--width", choices=("full", "tiny"), default="full", help="Mixtral-8x7B widths or the tiny test model"
    )
    ap.add_argument("--steps", type=int, default=8, help="measured optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra Axolotl override key=value")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "bench-train")
    ap.add_argument("--keep-models", action="store_true", help="keep the built models (GBs each at full width)")
    ap.add_argument("--verbose", action="store_true", help="stream Axolotl's output (always in runs/*/train.log)")
    args = ap.parse_args(argv)
    if args.steps < 2 or args.warmup < 0:
        ap.error("--steps must be at least 2 and --warmup at least 0")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    import torch

    from bench.membench import BenchOptions, render_table, run_bench, synthetic_rg_rows
    from mixtral_ft.axolotl_cfg.render import configs_dir, profile_names
    from mixtral_ft.errors import MixftError
    from mixtral_ft.prepare.options import PrepareOptions
    from mixtral_ft.prepare.pipeline import run_prepare
    from mixtral_ft.prepare.readers import InputSpec
    from mixtral_ft.prepare.rg import RgTask
    from mixtral_ft.prepare.split import TestSize
    from mixtral_ft.util.atomic import atomic_write_text
    from mixtral_ft.util.manifest import write_manifest
    from mixtral_ft.util.provenance import environment, now_iso, set_command_line

    profiles = tuple(p for p in args.profile.split(",") if p)
    known = profile_names(configs_dir())
    unknown = [p for p in profiles if p not in known]
    if unknown:
        ap.error(f"unknown profile(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    gpu_profiles = [p for p in profiles if p != "cpu"]
    if gpu_profiles and not torch.cuda.is_available():
        ap.error(f"profile(s) {', '.join(gpu_profiles)} need a CUDA GPU; on CPU use --profile cpu --width tiny")
    if args.width == "full" and "cpu" in profiles:
        ap.error(
            "--width full on the cpu profile would need ~10 GB of RAM per layer and hours per step; use --width tiny"
        )

    set_command_line([sys.executable, *sys.argv] if argv is None else ["bench_train.py", *argv])
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    corpus = REPO / "data" / "sample_qa.jsonl"
    # Text for one epoch of every measured step at the largest profile's tokens per optimizer step,
    # at <= 6 characters a token (the in-domain tokenizer gets ~4-5), with a 20% margin.
    per_step = max(_tokens_per_step(p, out, tuple(args.overrides)) for p in profiles)
    min_chars = int((args.warmup + args.steps) * per_step * 6 * 1.2)
    data_dir = out / "data"
    stamp = data_dir / "bench_rows.json"
    if not stamp.exists() or json.loads(stamp.read_text())["min_chars"] < min_chars:
        sample = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = synthetic_rg_rows(sample, min_chars)
        src = out / "bench_qa.jsonl"
        atomic_write_text(src, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"preparing {len(rows)} benchmark rows ({min_chars:,} characters or more) -> {data_dir}", file=sys.stderr)
        run_prepare(
            PrepareOptions(
                inputs=[InputSpec(path=src, format="jsonl")], out=data_dir, test_size=TestSize(count=2), force=True
            ),
            RgTask(),
        )  # the runs do not evaluate
        atomic_write_text(stamp, json.dumps({"min_chars": min_chars, "rows": len(rows)}) + "\n")
    opts = BenchOptions(
        layers=args.layers,
        profiles=profiles,
        out=out,
        width=args.width,
        steps=args.steps,
        warmup=args.warmup,
        overrides=tuple(args.overrides),
        keep_models=args.keep_models,
        corpus=corpus,
        verbose=args.verbose,
        init_device="cuda" if torch.cuda.is_available() else None,
    )
    started = now_iso()
    try:
        results = run_bench(opts, data_dir, say=lambda m: print(m, file=sys.stderr, flush=True))
    except MixftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = render_table(results["rows"], results["fits"])
    record = {
        "kind": "mixft-bench-train",
        "started_at": started,
        "ended_at": now_iso(),
        "options": {
            "layers": list(args.layers),
            "profiles": list(profiles),
            "width": args.width,
            "steps": args.steps,
            "warmup": args.warmup,
            "overrides": list(args.overrides),
        },
        "environment": environment(),
        **results,
    }
    atomic_write_text(out / "results.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "results.md", table)
    write_manifest(
        out / "manifest.json", {k: record[k] for k in ("kind", "started_at", "ended_at", "options", "environment")}
    )
    print(table)
    return 0 if all(r["ok"] for r in results["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
