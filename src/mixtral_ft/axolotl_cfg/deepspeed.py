"""Which DeepSpeed configs mixft accepts: ZeRO-2 yes, ZeRO-3 no.

Under ZeRO-3 Axolotl's on-load expert quantization never runs (Mixtral's experts stay bf16) and its
Mixtral sample-packing patch imports a class transformers 5 removed, so a stage-3 config is refused
when it is rendered, with the reason and the alternative. The source it rests on, file and line:
docs/design/training-decisions.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZERO3_REFUSAL = (
    "ZeRO stage 3 is not supported for these runs: under ZeRO-3 Axolotl 0.21 loads the model without a "
    "device_map (axolotl/loaders/model.py:962-972), so quantize_moe_experts never quantizes the experts "
    "(Mixtral's stay bf16, ~90 GB), and its Mixtral sample-packing patch imports MixtralBlockSparseTop2MLP "
    "(axolotl/monkeypatch/mixtral/__init__.py:44), which transformers 5 removed; "
    "use --profile multi-gpu (ZeRO-2: each GPU holds the 4-bit model, ~23 GiB)"
)


def zero_stage(deepspeed: str | dict[str, Any]) -> int | None:
    """The ``zero_optimization.stage`` of a DeepSpeed config given as a JSON path or a mapping.

    The same reading Axolotl does (``utils/trainer.py``). Raises ``ValueError`` with a one-line
    reason when the file is missing or unreadable, ``TypeError`` when it is not a JSON object.
    """
    if isinstance(deepspeed, dict):
        data: Any = deepspeed
    else:
        path = Path(deepspeed)
        if not path.is_file():
            raise ValueError(f"{deepspeed}: DeepSpeed config not found (mixft ships configs/deepspeed/zero2.json)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{deepspeed}: not a readable DeepSpeed JSON file ({e})") from None
    if not isinstance(data, dict):
        raise TypeError(f"{deepspeed}: a DeepSpeed config must be a JSON object")
    zero = data.get("zero_optimization") or {}
    stage = zero.get("stage") if isinstance(zero, dict) else None
    return int(stage) if isinstance(stage, (int, str)) and str(stage).isdigit() else None


def check_deepspeed(deepspeed: str | dict[str, Any] | None) -> list[str]:
    """Problems with the ``deepspeed:`` value of a rendered config, one line each (``deepspeed: ...``)."""
    if not deepspeed:
        return []
    try:
        stage = zero_stage(deepspeed)
    except (ValueError, TypeError) as e:
        return [f"deepspeed: {e}"]
    if stage == 3:
        where = "the inline config" if isinstance(deepspeed, dict) else Path(deepspeed).name
        return [f"deepspeed: {where} is ZeRO-3. {ZERO3_REFUSAL}"]
    return []
