"""`mixft merge` memory and speed on a Mixtral-8x7B-shaped checkpoint (numbers go in docs/training.md).

    .venv/bin/python scripts/bench_merge.py --layers 1,2 --out out/bench-merge

For each layer count it writes a bf16 checkpoint with Mixtral-8x7B's real widths (hidden 4096,
8 experts of 14336, 32/8 heads, 32k vocab) in the Hugging Face per-expert layout
(``block_sparse_moe.experts.E.w1/w2/w3.weight``, one safetensors shard per layer), random
weights written one tensor at a time, and a PEFT LoRA adapter (r=32, alpha=16) on
q/k/v/o_proj (``--experts`` adds LoRA on the fused experts too). It then runs `mixft merge` in a
child process and records the child's peak resident memory and wall time. Peak memory that
does not grow with the layer count is what lets a 93 GB Mixtral merge on a small machine.

Disk: ~3.2 GB + 2.9 GB per layer for the base, the same again for the merged copy.
CPU smoke run (what the slow test does): ``--width tiny --layers 1,2``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIDTHS = {
    "mixtral-8x7b": {"hidden": 4096, "ffn": 14336, "experts": 8, "heads": 32, "kv_heads": 8, "vocab": 32000},
    "tiny": {"hidden": 64, "ffn": 128, "experts": 4, "heads": 4, "kv_heads": 2, "vocab": 1024},
}


def write_base(out: Path, layers: int, w: dict) -> int:
    """A bf16 Mixtral checkpoint, one shard per layer plus one for embeddings/head; returns bytes."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    h, f, e, hd = w["hidden"], w["ffn"], w["experts"], w["hidden"] // w["heads"]

    def rand(*shape):
        return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)

    n_shards = layers + 1
    weight_map: dict[str, str] = {}
    total = 0
    for i in range(layers):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        p = f"model.layers.{i}"
        tensors = {
            f"{p}.self_attn.q_proj.weight": rand(h, h),
            f"{p}.self_attn.k_proj.weight": rand(w["kv_heads"] * hd, h),
            f"{p}.self_attn.v_proj.weight": rand(w["kv_heads"] * hd, h),
            f"{p}.self_attn.o_proj.weight": rand(h, h),
            f"{p}.block_sparse_moe.gate.weight": rand(e, h),
            f"{p}.input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            f"{p}.post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        }
        for x in range(e):
            tensors[f"{p}.block_sparse_moe.experts.{x}.w1.weight"] = rand(f, h)
            tensors[f"{p}.block_sparse_moe.experts.{x}.w2.weight"] = rand(h, f)
            tensors[f"{p}.block_sparse_moe.experts.{x}.w3.weight"] = rand(f, h)
        save_file(tensors, out / name, metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({k: name for k in tensors})
        del tensors
    name = f"model-{n_shards:05d}-of-{n_shards:05d}.safetensors"
    tensors = {
        "model.embed_tokens.weight": rand(w["vocab"], h),
        "lm_head.weight": rand(w["vocab"], h),
        "model.norm.weight": torch.ones(h, dtype=torch.bfloat16),
    }
    save_file(tensors, out / name, metadata={"format": "pt"})
    total += sum(t.numel() * 2 for t in tensors.values())
    weight_map.update({k: name for k in tensors})
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )
    config = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": h,
        "intermediate_size": f,
        "num_hidden_layers": layers,
        "num_attention_heads": w["heads"],
        "num_key_value_heads": w["kv_heads"],
        "num_local_experts": e,
        "num_experts_per_tok": 2,
        "vocab_size": w["vocab"],
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1e6,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return total


def write_run(run: Path, base: Path, layers: int, w: dict, experts: bool, rank: int = 32) -> None:
    """A fake `mixft train` run directory: axolotl.yml naming the base, and a PEFT adapter in output/."""
    import torch
    from safetensors.torch import save_file

    out = run / "output"
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1)
    h, hd, e, f = w["hidden"], w["hidden"] // w["heads"], w["experts"], w["ffn"]
    dims = {"q_proj": (h, h), "k_proj": (h, w["kv_heads"] * hd), "v_proj": (h, w["kv_heads"] * hd), "o_proj": (h, h)}
    tensors = {}
    for i in range(layers):
        for proj, (d_in, d_out) in dims.items():
            k = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            tensors[f"{k}.lora_A.weight"] = torch.randn(rank, d_in, generator=gen) * 0.01
            tensors[f"{k}.lora_B.weight"] = torch.randn(d_out, rank, generator=gen) * 0.01
        if experts:  # PEFT nests the wrappers: the outer one adapts down_proj, the inner gate_up_proj
            k = f"base_model.model.model.layers.{i}.mlp.experts"
            tensors[f"{k}.lora_A.weight"] = torch.randn(rank * e, f, generator=gen) * 0.01
            tensors[f"{k}.lora_B.weight"] = torch.randn(h, rank * e, generator=gen) * 0.01
            tensors[f"{k}.base_layer.lora_A.weight"] = torch.randn(rank * e, h, generator=gen) * 0.01
            tensors[f"{k}.base_layer.lora_B.weight"] = torch.randn(2 * f, rank * e, generator=gen) * 0.01
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, out / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "task_type": "CAUSAL_LM",
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"] if experts else None,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (run / "axolotl.yml").write_text(f"base_model: {base}\nadapter: qlora\nload_in_4bit: true\n")
    # A run whose training finished (mixft merge merges only finished runs): its manifest's last attempt.
    (run / "manifest.json").write_text('{"kind": "train", "attempts": [{"outcome": "finished", "exit_status": 0}]}\n')


def measure(run: Path) -> dict:
    """`mixft merge RUN` in a child process: exit status, wall time, the child's peak RSS (VmHWM)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child forked from this
    # process (which held a shard while writing the base) would report this process's peak.
    code = (
        "import sys; from mixtral_ft.cli.main import main; rc = main(sys.argv[1:]); "
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
        "print('PEAK_RSS_KB', hwm, file=sys.stderr); sys.exit(rc)"
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, "merge", str(run), "--force"], capture_output=True, text=True, env=env, check=False
    )
    wall = time.monotonic() - t0
    peak_kb = next((int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")), None)
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_gib": peak_kb and round(peak_kb / 2**20, 2),
        "stdout": proc.stdout.strip(),
        "stderr_tail": proc.stderr.strip().splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="1,2", help="comma-separated layer counts")
    ap.add_argument("--width", choices=sorted(WIDTHS), default="mixtral-8x7b")
    ap.add_argument("--experts", action="store_true", help="also LoRA on the fused experts (lora_target_parameters)")
    ap.add_argument("--out", type=Path, default=Path("out/bench-merge"))
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    args = ap.parse_args(argv)
    w = WIDTHS[args.width]
    results = []
    for layers in (int(x) for x in args.layers.split(",")):
        work = args.out / f"{args.width}-L{layers}"
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.monotonic()
        size = write_base(work / "base", layers, w)
        write_run(work / "run", work / "base", layers, w, args.experts)
        row = {
            "layers": layers,
            "width": args.width,
            "experts_lora": args.experts,
            "checkpoint_gib": round(size / 2**30, 2),
            "build_s": round(time.monotonic() - t0, 1),
        }
        row.update(measure(work / "run"))
        if row["rc"] == 0:
            manifest = json.loads((work / "run" / "merged" / "mixft_merge.json").read_text())
            row["merged_tensors"] = manifest["summary"]["merged_tensors"]
            row["gib_per_s"] = round(row["checkpoint_gib"] / row["wall_s"], 3) if row["wall_s"] else None
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("stderr_tail",)}), flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
