"""The planner's measured error band: how far short of published peaks its plans have fallen, by kind of run.

A plan ``fits`` when its peak raised by this band (``peak_high_gib``) is at most the card's memory. The
rows come from ``scripts/bench_plan.py --bands`` over ``scripts/plan_points.yaml``; the kind of a run is
how its base weights are stored (4-bit, 8-bit, 16/32-bit). Points left out carry their reason in
:data:`LEFT_OUT`. How the band is built: docs/design/planner.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# point id -> signed error in percent (plan on the source's counter, less the measurement, over the
# measurement) from the validation run; negative: the plan was short.
ROWS: dict[str, dict[str, float]] = {
    "4-bit": {
        "axolotl-devstral-24b-qlora": 0.6,
        "axolotl-llama2-7b-qlora-4090": -2.9,
        "axolotl-magistral-24b-qlora": 11.5,
        "axolotl-ministral-8b-qlora": 15.7,
        "axolotl-olmo3-7b-qlora": -16.0,
        "axolotl-openllama3b-qlora": -5.9,
        "fsdp-qlora-llama2-7b-qlora-ddp-bs8": -4.3,
        "llamafactory-llama2-7b-qlora-fa2-1024": -8.5,
        "llamafactory-llama2-7b-qlora-fa2-16384": -2.4,
        "llamafactory-llama2-7b-qlora-fa2-32768": 1.6,
        "llamafactory-llama2-7b-qlora-fa2-4096": -10.2,
        "reference-mixtral-rg-a100-80": -1.7,
        "unsloth-hf-fa2-llama31-8b-24gb-max5789": -11.3,
        "unsloth-hf-fa2-llama31-8b-40gb-max12264": -6.3,
        "unsloth-hf-fa2-llama31-8b-80gb-max28454": -2.5,
        "unsloth-hf-fa2-llama33-70b-80gb-max6916": -8.6,
    },
    "8-bit": {
        "axolotl-llama2-7b-lora8bit-4090": -5.7,
        "axolotl-openllama3b-lora8bit": -19.7,
    },
    "16-bit": {
        "fsdp-qlora-llama2-7b-lora-ddp-bs4": 1.8,
        "peft-readme-bloomz-7b1-lora-fp32": -5.4,
    },
}
QWEN1 = (
    "Qwen-1 is remote code (modeling_qwen.py), not a transformers class: it is planned as the Llama "
    "of its shape, so the comparison measures Qwen-1's own attention and loss code as much as the planner"
)
# Points of scripts/plan_points.yaml with a peak that no band counts, and why.
LEFT_OUT: dict[str, str] = {
    "ms-swift-qwen7b-lora-bf16-2048": QWEN1,
    "ms-swift-qwen7b-lora-bf16-8192": QWEN1,
    "ms-swift-qwen7b-qlora-bnb4-2048": QWEN1,
}


@dataclass(frozen=True)
class Band:
    """The share a plan's peak is raised by for its kind of run, and the validation rows it comes from."""

    kind: str
    rows: tuple[tuple[str, float], ...]

    @property
    def pct(self) -> float:
        """The largest shortfall of the rows, rounded up to a whole percent (0 when no row was short)."""
        return float(math.ceil(max([0.0, *(-err for _, err in self.rows)]) - 1e-9))

    @property
    def worst(self) -> str | None:
        return min(self.rows, key=lambda r: r[1])[0] if self.rows else None

    def high(self, peak_gib: float) -> float:
        return peak_gib * (1 + self.pct / 100)

    def source(self) -> str:
        if not self.rows:
            return f"no published {self.kind} peak in the validation: no band"
        worst = min(err for _, err in self.rows)
        return (
            f"validation against {len(self.rows)} published {self.kind} peaks (docs/design/planning-validation.md): "
            f"largest shortfall {worst:+.1f}% ({self.worst})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pct": self.pct,
            "points": len(self.rows),
            "worst": self.worst,
            "source": self.source(),
        }


def run_kind(setup) -> str:
    """``4-bit``, ``8-bit`` or ``16-bit``: how the base weights of ``setup`` (a ``TrainSetup``) are stored."""
    if setup.load_in_4bit:
        return "4-bit"
    if setup.load_in_8bit:
        return "8-bit"
    return "16-bit"


def band_for(setup) -> Band:
    kind = run_kind(setup)
    return Band(kind, tuple(sorted(ROWS[kind].items())))
