"""What grows with the length of a row in a Hugging Face + PEFT training step: the measurements behind
docs/design/planning-long-rows.md, on the CPU, with the real modules at full width.

    .venv/bin/python scripts/measure_long_rows.py --out runs/long-rows            # everything (~20 min)
    .venv/bin/python scripts/measure_long_rows.py --only mask,rotary --out DIR    # a few

Each candidate is one measurement:

- ``real``: one Llama-2-7B decoder layer (hidden 4096, vocabulary 32,000) with real 4-bit weights, real
  PEFT LoRA and reentrant checkpointing, one training step on real tensors and on FakeTensors, at rows
  of 1,024 to 4,096 tokens: the live bytes of every phase, real against simulated.
- ``mask``: the attention mask transformers builds (``masking_utils.create_causal_mask``) for a row of
  1K-16K tokens, per attention implementation, with the inputs a trainer passes (a full row, no
  padding), with padding, and with the position ids that read as packed sequences.
- ``rotary``: the cos/sin tensors of the rotary embedding for a row (``LlamaRotaryEmbedding``).
- ``head``: the live bytes of the head phase (output head, loss and their backward) per logit, with the
  loss of the installed transformers and with the loss of transformers before 4.49 (FakeTensors).
- ``autocast``: the step under CUDA's autocast policy instead of the CPU's: the ops CUDA autocast runs in
  float32 (``sum``, ``softmax``, ``exp``, ``pow``, ``rsqrt``, ... on 16-bit inputs; the CPU list has none
  of them) made to do so on the CPU, Mixtral-8x7B and Llama-2-7B at 2 layers (FakeTensors).
- ``allocator``: the full-depth step's live-byte peak and what PyTorch's CUDA caching allocator needs for
  it (``mixtral_ft.plan.allocator``: the replay), for Llama-2-7B, Llama-3.1-8B and Mixtral-8x7B QLoRA at
  rows of 1K-32K tokens.

Writes OUT/long-rows.json (every number) and prints a table per measurement. Keep each run under ~6 GB
of memory: the real step stops at 4,096 tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
MIB = 2**20
MEASUREMENTS = ("real", "mask", "rotary", "head", "autocast", "allocator")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_plan", REPO / "scripts" / "bench_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_plan"] = module
    spec.loader.exec_module(module)
    return module


def _point_setup(point_id: str, tmp: Path, **changes):
    """The TrainSetup and architecture of a point of scripts/plan_points.yaml (the architecture named by the
    model's Hub id)."""
    from dataclasses import replace

    from mixtral_ft.plan.arch import load_arch
    from mixtral_ft.plan.setup import setup_from_config

    bench = _bench()
    data = bench.load_points()
    point = {p["id"]: p for p in data["points"]}[point_id]
    configs = bench.write_model_configs(data["models"], tmp)
    setup = setup_from_config(bench.axolotl_config(point, configs[point["model"]]), casts=point.get("casts", "axolotl"))
    arch = replace(load_arch(setup.base_model), name=data["models"][point["model"]]["hf_id"])
    return replace(setup, **changes), arch


def _shipped_setup(task: str, profile: str):
    """The TrainSetup and architecture of a shipped (task, profile) pair, as ``mixft train`` renders it."""
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.plan.arch import load_arch
    from mixtral_ft.plan.setup import setup_from_config

    values = render(RenderRequest(task=task, data_dir=Path("data"), profile=profile, run_dir=Path("run"))).values
    setup = setup_from_config(values)
    return setup, load_arch(setup.base_model)


def measure_real(tmp: Path) -> list[dict[str, Any]]:
    """Real against FakeTensor step of one full-width Llama-2-7B layer (QLoRA, flash attention's memory model)."""
    from mixtral_ft.plan.measure import build_training_model, quiet, simulate_training_step

    setup, arch = _point_setup("llamafactory-llama2-7b-qlora-fa2-4096", tmp)
    rows = []
    with quiet():
        built = {fake: build_training_model(arch, setup, 1, fake=fake) for fake in (True, False)}
        for seq in (1024, 2048, 4096):
            out: dict[str, Any] = {"seq": seq}
            for fake in (True, False):
                model, mode, lora, torch = built[fake]
                t = time.time()
                r = simulate_training_step(model, mode, lora, torch, setup, arch.vocab_size, 1, seq)
                key = "fake" if fake else "real"
                out[key] = {phase: v["bytes"] for phase, v in r["peaks"].items()}
                out[f"{key}_s"] = round(time.time() - t, 1)
            out["equal"] = out["fake"] == out["real"]
            rows.append(out)
            print(
                f"real vs fake, 1 layer, {seq} tokens: equal={out['equal']} peak {max(out['real'].values()) / GIB:.3f} GiB"
            )
    return rows


def measure_mask() -> list[dict[str, Any]]:
    """Bytes of the mask ``create_causal_mask`` returns (and of what it allocates on the way)."""
    import torch
    from transformers import LlamaConfig
    from transformers.masking_utils import create_causal_mask

    from mixtral_ft.plan.sim import MemoryTracker

    rows = []
    for impl in ("sdpa", "eager", "flash_attention_2"):
        config = LlamaConfig(hidden_size=64, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1)
        config._attn_implementation = impl
        for seq in (1024, 4096, 16384):
            embeds = torch.empty(1, seq, 8, dtype=torch.bfloat16)
            cases = {
                "full row (trainer)": {"attention_mask": torch.ones(1, seq, dtype=torch.long)},
                "full row, no mask": {"attention_mask": None},
                "zero position ids": {"attention_mask": None, "position_ids": torch.zeros(1, seq, dtype=torch.long)},
                "one padded token": {
                    "attention_mask": torch.cat([torch.ones(1, seq - 1), torch.zeros(1, 1)], 1).long()
                },
            }
            for case, kwargs in cases.items():
                tracker = MemoryTracker(vocab_size=-1)
                with tracker:
                    mask = create_causal_mask(config, embeds, past_key_values=None, **kwargs)
                kept = 0 if mask is None or not isinstance(mask, torch.Tensor) else mask.untyped_storage().nbytes()
                peak = max((v["bytes"] for v in tracker.peaks.values()), default=0)
                rows.append({"impl": impl, "seq": seq, "case": case, "kept_bytes": kept, "peak_bytes": peak})
                del mask
    for r in rows:
        print(
            f"mask {r['impl']:<18} {r['seq']:>6} {r['case']:<20} kept {r['kept_bytes'] / MIB:9.1f} MiB, peak {r['peak_bytes'] / MIB:9.1f} MiB"
        )
    return rows


def measure_rotary() -> list[dict[str, Any]]:
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig()  # Llama-2-7B: head_dim 128
    rope = LlamaRotaryEmbedding(config)
    rows = []
    for seq in (1024, 4096, 16384, 32768):
        x = torch.empty(1, seq, 8, dtype=torch.bfloat16)
        cos, sin = rope(x, torch.arange(seq)[None])
        rows.append({"seq": seq, "bytes": cos.untyped_storage().nbytes() + sin.untyped_storage().nbytes()})
        print(
            f"rotary {seq:>6}: cos+sin {rows[-1]['bytes'] / MIB:.1f} MiB ({rows[-1]['bytes'] / seq:.0f} bytes per token)"
        )
    return rows


def measure_head(tmp: Path) -> list[dict[str, Any]]:
    """Head-phase live bytes per logit (tokens x vocabulary), installed loss and the loss before 4.49."""
    from transformers.loss import loss_utils

    from mixtral_ft.plan.measure import build_training_model, quiet, simulate_training_step

    bench = _bench()
    rows = []
    for point_id in ("llamafactory-llama2-7b-qlora-fa2-4096", "unsloth-hf-fa2-llama31-8b-24gb-max5789"):
        setup, arch = _point_setup(point_id, tmp)
        with quiet():
            model, mode, lora, torch = build_training_model(arch, setup, 2)
            for legacy in (False, True):
                saved = loss_utils.LOSS_MAPPING["ForCausalLM"]
                if legacy:
                    loss_utils.LOSS_MAPPING["ForCausalLM"] = bench.legacy_causal_lm_loss
                try:
                    for seq in (2048, 8192):
                        r = simulate_training_step(model, mode, lora, torch, setup, arch.vocab_size, 1, seq)
                        head = r["peaks"]["head"]["by_tag"].get("logits", 0)
                        per = head / (seq * arch.vocab_size)
                        rows.append(
                            {
                                "model": arch.name,
                                "vocab": arch.vocab_size,
                                "seq": seq,
                                "legacy": legacy,
                                "logits_bytes": head,
                                "bytes_per_logit": round(per, 2),
                            }
                        )
                        print(
                            f"head {arch.vocab_size:>6} vocab, {seq:>5} tokens, {'transformers < 4.49' if legacy else 'installed':<20}: logits+loss {head / GIB:.2f} GiB = {per:.2f} bytes per logit"
                        )
                finally:
                    loss_utils.LOSS_MAPPING["ForCausalLM"] = saved
    return rows


def cuda_autocast_policy():
    """A function mode giving the CPU CUDA autocast's float32 policy (PyTorch's autocast op reference, "CUDA
    Ops that can autocast to float32"): ``sum``, ``prod``, ``cumsum``, ``softmax`` and ``log_softmax`` of a
    16-bit tensor get ``dtype=float32``; the math and loss ops get float32 inputs."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map_only

    T = torch.Tensor
    set_dtype = {torch.sum, T.sum, torch.prod, T.prod, torch.cumsum, T.cumsum, torch.softmax, T.softmax, F.softmax}
    set_dtype |= {torch.log_softmax, T.log_softmax, F.log_softmax}
    to_fp32 = {torch.exp, T.exp, torch.pow, T.pow, T.__pow__, torch.rsqrt, T.rsqrt, torch.log, T.log, torch.reciprocal}
    to_fp32 |= {T.reciprocal, torch.expm1, torch.log1p, F.layer_norm, F.cross_entropy, F.nll_loss, torch.logsumexp}
    to_fp32 |= {F.softplus, F.mse_loss, F.kl_div, torch.norm, T.norm, F.normalize}
    low = (torch.bfloat16, torch.float16)

    class Policy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if torch.is_autocast_enabled("cpu"):
                if func in set_dtype and args and isinstance(args[0], T) and args[0].dtype in low:
                    kwargs.setdefault("dtype", torch.float32)
                elif func in to_fp32:
                    args = tree_map_only(T, lambda t: t.float() if t.dtype in low else t, args)
            return func(*args, **kwargs)

    return Policy()


def measure_autocast(tmp: Path) -> list[dict[str, Any]]:
    """Peak of every phase under the CPU's autocast and under CUDA's float32 policy (2 layers, FakeTensors)."""
    from mixtral_ft.plan.measure import build_training_model, quiet, simulate_training_step

    rows = []
    cases = (
        (_shipped_setup("rg", "a100-80gb"), 4096),
        (_point_setup("llamafactory-llama2-7b-qlora-fa2-4096", tmp), 16384),
    )
    for (setup, arch), seq in cases:
        with quiet():
            model, mode, lora, torch = build_training_model(arch, setup, 2)
            peaks = {}
            for policy in (False, True):
                with cuda_autocast_policy() if policy else contextlib.nullcontext():
                    r = simulate_training_step(
                        model, mode, lora, torch, setup, arch.vocab_size, setup.micro_batch_size, seq
                    )
                peaks[policy] = {phase: v["bytes"] for phase, v in r["peaks"].items()}
        row = {"model": arch.name, "tokens": setup.micro_batch_size * seq, "cpu": peaks[False], "cuda": peaks[True]}
        rows.append(row)
        top = max(row["cpu"].values())
        print(
            f"autocast {arch.name[:28]:<28} {row['tokens']:>6} tokens: step peak {top / GIB:.3f} GiB on the CPU's policy, "
            f"{max(row['cuda'].values()) / GIB:.3f} GiB on CUDA's; per phase (GiB, CUDA - CPU): "
            + ", ".join(f"{k} {(row['cuda'][k] - v) / GIB:+.3f}" for k, v in row["cpu"].items() if k in row["cuda"])
        )
    return rows


def measure_allocator(tmp: Path) -> list[dict[str, Any]]:
    """Full-depth step: live-byte peak, and the caching allocator's needed and reserved peak for it."""
    from mixtral_ft.plan.allocator import needed_bytes
    from mixtral_ft.plan.measure import build_training_model, quiet, simulate_training_step

    cases = (
        ("llamafactory-llama2-7b-qlora-fa2-4096", (1024, 4096, 16384, 32768)),
        ("unsloth-hf-fa2-llama31-8b-24gb-max5789", (2048, 8192, 16384)),
        ("reference-mixtral-rg-a100-80", (4096, 8192, 16384)),
    )
    rows = []
    for point_id, seqs in cases:
        setup, arch = _point_setup(point_id, tmp, micro_batch_size=1, casts="axolotl")
        with quiet():
            model, mode, lora, torch = build_training_model(arch, setup, arch.num_layers)
            for seq in seqs:
                r = simulate_training_step(model, mode, lora, torch, setup, arch.vocab_size, 1, seq, record=True)
                tracked = max(v["bytes"] for v in r["peaks"].values())
                n = needed_bytes(r["events"])
                row = {"model": arch.name, "layers": arch.num_layers, "seq": seq, "tracked": tracked} | n
                rows.append(row)
                print(
                    f"allocator {arch.name[:28]:<28} {seq:>6} tokens: live {tracked / GIB:6.2f} GiB, needed "
                    f"+{(n['needed'] - tracked) / GIB:5.2f} GiB, reserved +{(n['reserved_peak'] - tracked) / GIB:5.2f} GiB"
                )
        del model
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "long-rows")
    ap.add_argument("--only", default=",".join(MEASUREMENTS), help=f"comma-separated: {', '.join(MEASUREMENTS)}")
    args = ap.parse_args(argv)
    only = [m for m in args.only.split(",") if m]
    unknown = set(only) - set(MEASUREMENTS)
    if unknown:
        ap.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    import tempfile

    from mixtral_ft.util.atomic import atomic_write_text
    from mixtral_ft.util.provenance import environment

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="long-rows-") as tmp:
        work = Path(tmp)
        runs = {
            "real": lambda: measure_real(work),
            "mask": measure_mask,
            "rotary": measure_rotary,
            "head": lambda: measure_head(work),
            "autocast": lambda: measure_autocast(work),
            "allocator": lambda: measure_allocator(work),
        }
        for name in only:
            results[name] = runs[name]()
    atomic_write_text(args.out / "long-rows.json", json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
