"""Step time and hours: FLOPs (recompute included) at a stated, calibrated MFU, plus the memory-bound
dequantization of 4-bit weights.

:func:`micro_batch_cost` counts one micro batch; :func:`calibrate_mfu` (MoE, from the reference
report's runs) and :func:`calibrate_dense_mfu` (dense models, fitted on published throughput and checked
on held-out runs) give the MFUs and show their arithmetic. The formulas and the calibration data:
docs/design/planner.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BANDWIDTH_EFFICIENCY = 0.7  # fraction of peak memory bandwidth an elementwise dequant kernel reaches
FLASH_BWD_FACTOR = 2.5

# The reference report's runs (one A100-80GB, 5 epochs, micro batch 4, sample packing, Mixtral-8x7B
# QLoRA, flash attention, gradient checkpointing). Its data is not public: the row counts are the
# report's (2,100 RG training rows; 2,100 RG answers + ~2,000 GPT-3.5 answers for TC), the mean
# lengths are assumptions: RG rows are knowledge-base context + question + answer, "the majority"
# under 4,096 tokens; TC rows carry the same context and question plus the response, the TC
# instructions and the verdict JSON (~600 tokens more).
REPORT_RUNS = {
    "rg": {"hours": 6.5, "rows": 2100, "mean_tokens": 2000, "sequence_len": 4096, "epochs": 5},
    "tc": {"hours": 14.0, "rows": 4100, "mean_tokens": 2600, "sequence_len": 8192, "epochs": 5},
}
REPORT_GPU = "a100-80gb"
REPORT_MICRO_BATCH = 4
REPORT_PACKING_EFFICIENCY = 0.97  # first-fit packing of ~2k-token rows into 16K/32K bins


@dataclass
class StepCost:
    flops: float
    dequant_bytes: float
    parts: dict[str, float]

    def seconds(self, tflops: float, bandwidth_gbs: float, mfu: float) -> float:
        return self.flops / (tflops * 1e12 * mfu) + self.dequant_bytes / (bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)


def micro_batch_cost(
    weights: dict[str, Any],
    arch_dims: dict[str, int],
    token_slots: float,
    attention_pairs: float,
    checkpointing: bool,
    frozen_base: bool = True,
) -> StepCost:
    """FLOPs and dequantization bytes of one micro batch (docs/design/planner.md).

    ``attention_pairs`` is the sum of squared sequence lengths in the micro batch."""
    matmul = weights["matmul_params"]
    experts, top_k = weights["experts"], weights["top_k"]
    p_layers = matmul["dense"] + matmul["experts"] * top_k / experts
    p_head = matmul["head"]
    a_fwd = 4 * arch_dims["heads"] * arch_dims["head_dim"] * attention_pairs / 2 * arch_dims["layers"]
    fwd = 2 * token_slots * (p_layers + p_head) + a_fwd
    bwd = 2 * token_slots * (p_layers + p_head) * (1 if frozen_base else 2) + FLASH_BWD_FACTOR * a_fwd
    rec = (2 * token_slots * p_layers + a_fwd) if checkpointing else 0.0
    deq_el = weights["dequant_elements"]
    passes = 2 if checkpointing else 1
    dequant = 2.5 * (deq_el["experts"] * passes + deq_el["linear"])  # linears: one dequant in backward
    return StepCost(fwd + bwd + rec, dequant, {"forward": fwd, "backward": bwd, "recompute": rec})


# Published throughput of dense LoRA/QLoRA runs of Llama-2-7B (hidden 4096, MLP 11008, 32 layers, vocabulary
# 32,000), each a point of scripts/plan_points.yaml with its source; token slots per second per GPU, rows of
# full length, no packing, gradient checkpointing.
# Fit: LLaMA-Factory wiki "Performance comparison" (github.com/hiyouga/LLaMA-Factory/wiki/Performance-comparison,
# second table, TGS row): QLoRA 4-bit, LoRA r=8 on every linear, FlashAttention-2, batch 1, one A100 40GB.
DENSE_FIT = (
    {
        "id": "llamafactory-llama2-7b-qlora-fa2-1024",
        "gpu": "a100-40gb",
        "load_in_4bit": True,
        "micro_batch": 1,
        "sequence_len": 1024,
        "tokens_per_s": 2295,
    },
    {
        "id": "llamafactory-llama2-7b-qlora-fa2-4096",
        "gpu": "a100-40gb",
        "load_in_4bit": True,
        "micro_batch": 1,
        "sequence_len": 4096,
        "tokens_per_s": 2926,
    },
    {
        "id": "llamafactory-llama2-7b-qlora-fa2-16384",
        "gpu": "a100-40gb",
        "load_in_4bit": True,
        "micro_batch": 1,
        "sequence_len": 16384,
        "tokens_per_s": 3542,
    },
    {
        "id": "llamafactory-llama2-7b-qlora-fa2-32768",
        "gpu": "a100-40gb",
        "load_in_4bit": True,
        "micro_batch": 1,
        "sequence_len": 32768,
        "tokens_per_s": 2216,
    },
)
# Held out: Answer.AI fsdp_qlora benchmarks_03_2024.md (github.com/AnswerDotAI/fsdp_qlora), "dual 4090" table:
# 1,024 rows x 2,048 tokens on 2x RTX 4090 in 450 s (QLoRA, batch 8) and 437 s (16-bit LoRA, batch 4), r=64.
DENSE_HELD_OUT = (
    {
        "id": "fsdp-qlora-llama2-7b-qlora-ddp-bs8",
        "gpu": "rtx-4090",
        "load_in_4bit": True,
        "micro_batch": 8,
        "sequence_len": 2048,
        "tokens_per_s": 2330,
    },
    {
        "id": "fsdp-qlora-llama2-7b-lora-ddp-bs4",
        "gpu": "rtx-4090",
        "load_in_4bit": False,
        "micro_batch": 4,
        "sequence_len": 2048,
        "tokens_per_s": 2400,
    },
)
DENSE_MODEL = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "_name_or_path": "Llama-2-7B",
}


def calibrate_dense_mfu(weights_for, arch, gpus: dict) -> dict[str, Any]:
    """The dense MFU: the mean of the MFUs that reproduce each :data:`DENSE_FIT` run's throughput, and the
    throughput it then plans for every fit and held-out run with its error. ``weights_for(load_in_4bit)``
    gives the weight summary of :data:`DENSE_MODEL` as loaded for that run."""
    dims = arch_dims(arch)

    def cost_of(run):
        slots = run["micro_batch"] * run["sequence_len"]
        pairs = run["micro_batch"] * run["sequence_len"] ** 2
        return slots, micro_batch_cost(weights_for(run["load_in_4bit"]), dims, slots, pairs, checkpointing=True)

    implied = {}
    for run in DENSE_FIT + DENSE_HELD_OUT:
        gpu = gpus[run["gpu"]]
        slots, cost = cost_of(run)
        seconds = slots / run["tokens_per_s"]
        dequant_s = cost.dequant_bytes / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
        implied[run["id"]] = cost.flops / ((seconds - dequant_s) * gpu.bf16_tflops * 1e12)
    mfu = round(sum(implied[r["id"]] for r in DENSE_FIT) / len(DENSE_FIT), 4)
    points = {}
    for group, runs in (("fit", DENSE_FIT), ("held_out", DENSE_HELD_OUT)):
        for run in runs:
            gpu = gpus[run["gpu"]]
            slots, cost = cost_of(run)
            planned = slots / cost.seconds(gpu.bf16_tflops, gpu.bandwidth_gbs, mfu)
            points[run["id"]] = {
                "group": group,
                "gpu": run["gpu"],
                "measured_tokens_per_s": run["tokens_per_s"],
                "planned_tokens_per_s": round(planned, 1),
                "error_pct": round(100 * (planned - run["tokens_per_s"]) / run["tokens_per_s"], 1),
                "implied_mfu": round(implied[run["id"]], 4),
            }
    return {
        "mfu": mfu,
        "points": points,
        "basis": "mean MFU of LLaMA-Factory's Llama-2-7B QLoRA throughput on one A100 40GB (1K-32K tokens); "
        "fsdp_qlora's two RTX 4090 runs held out (scripts/plan_points.yaml has the sources)",
    }


def arch_dims(arch) -> dict[str, int]:
    return {"heads": int(arch.get("num_attention_heads")), "head_dim": arch.head_dim, "layers": arch.num_layers}


def report_micro_batches(run: dict[str, Any]) -> tuple[int, float]:
    """(micro batches per epoch, sum of squared lengths per micro batch) for a report run."""
    capacity = REPORT_MICRO_BATCH * run["sequence_len"]
    tokens = run["rows"] * run["mean_tokens"]
    n = max(1, round(tokens / (capacity * REPORT_PACKING_EFFICIENCY)))
    pairs = run["rows"] * run["mean_tokens"] ** 2 / n
    return n, pairs


def calibrate_mfu(weights: dict[str, Any], arch, gpus: dict) -> dict[str, Any]:
    """The MFU that reproduces each report run's hours; the plan uses their mean."""
    gpu = gpus[REPORT_GPU]
    dims = arch_dims(arch)
    points = {}
    for task, run in REPORT_RUNS.items():
        n, pairs = report_micro_batches(run)
        cost = micro_batch_cost(weights, dims, REPORT_MICRO_BATCH * run["sequence_len"], pairs, checkpointing=True)
        seconds = run["hours"] * 3600 / run["epochs"] / n
        dequant_s = cost.dequant_bytes / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
        mfu = cost.flops / ((seconds - dequant_s) * gpu.bf16_tflops * 1e12)
        points[task] = {
            "hours": run["hours"],
            "rows": run["rows"],
            "assumed_mean_tokens": run["mean_tokens"],
            "sequence_len": run["sequence_len"],
            "epochs": run["epochs"],
            "micro_batches_per_epoch": n,
            "step_s": round(seconds, 2),
            "tflop_per_step": round(cost.flops / 1e12, 1),
            "mfu": round(mfu, 4),
        }
    mean = sum(p["mfu"] for p in points.values()) / len(points)
    return {
        "mfu": round(mean, 4),
        "gpu": REPORT_GPU,
        "points": points,
        "basis": "the reference report's RG 6.5 h and TC 14 h on one A100-80GB (5 epochs, micro batch 4); "
        "its data is not public, so the token counts are assumptions (rows x mean tokens above)",
    }
