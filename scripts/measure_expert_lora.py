"""Measure what LoRA on Mixtral's fused experts materialises in one layer, for a few expert counts.

    python scripts/measure_expert_lora.py --experts 2,3 --out expert_lora.json
    python scripts/measure_expert_lora.py --one 2 --targets gate_up_proj,down_proj   # one case, JSON on stdout

Each case runs in a fresh process (Axolotl's PEFT patch is process-wide), with and without LoRA on
the experts; the extra bytes per expert and the fit through the origin are printed and written.
Real tensors at Mixtral widths: 2 experts take ~5 GB of RAM, 3 take ~7 GB (bench/expert_lora.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

GIB = 2**30


def run_one(experts: int, targets: str, quantized: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", str(experts), "--targets", targets]
    if not quantized:
        cmd.append("--bf16")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", default="2,3", help="expert counts to measure (comma-separated)")
    ap.add_argument("--targets", default="gate_up_proj,down_proj", help="fused tensors LoRA targets")
    ap.add_argument("--bf16", action="store_true", help="experts in bf16 instead of nf4 (no quantize_moe_experts)")
    ap.add_argument("--one", type=int, help="measure one case in this process and print its JSON")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.one is not None:
        from bench.expert_lora import measure

        targets = tuple(t for t in args.targets.split(",") if t)
        print(json.dumps(measure(args.one, targets, quantized=not args.bf16)))
        return 0
    rows = []
    for e in (int(x) for x in args.experts.split(",")):
        base = run_one(e, "", not args.bf16)
        lora = run_one(e, args.targets, not args.bf16)
        extra = lora["peak_bytes"] - base["peak_bytes"]
        rows.append({"experts": e, "base": base, "lora": lora, "extra_bytes": extra})
        print(
            f"{e} experts: peak {base['peak_bytes'] / GIB:.3f} GiB without expert LoRA, {lora['peak_bytes'] / GIB:.3f} "
            f"with; extra {extra / GIB:.3f} GiB = {extra / lora['expert_tensor_bytes']:.3f} x the experts' bf16 bytes",
            file=sys.stderr,
        )
    per_expert = [r["extra_bytes"] / r["experts"] for r in rows]
    summary = {"rows": rows, "extra_bytes_per_expert": per_expert}
    print(f"extra per expert: {', '.join(f'{b / GIB:.4f}' for b in per_expert)} GiB", file=sys.stderr)
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
