"""Measure whether Mixtral's router auxiliary loss has a gradient under each gradient-checkpointing mode.

    .venv/bin/python scripts/measure_router_aux.py [--model DIR] [--task rg] [--profile a100-80gb] [--json OUT]

Without --model it builds the tiny random Mixtral (mixtral_ft.models.tiny, no network) in a temporary
directory. The LoRA set-up (r, alpha, target modules) and the aux-loss coefficient are read from the
config mixft renders for --task/--profile with that model as base model, so the numbers follow the
shipped configs. For each mode (no checkpointing, reentrant, non-reentrant) it prints the loss, the aux
loss, what the aux term adds to the logged loss, whether the aux loss has an autograd graph and the
norm of its gradient with respect to the LoRA weights. The result is in docs/training.md
("Router auxiliary loss"); tests/test_router_aux_slow.py pins it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="Mixtral model directory (default: build the tiny one)")
    ap.add_argument("--task", default="rg", choices=("rg", "tc"))
    ap.add_argument("--profile", default="a100-80gb", help="profile whose rendered config gives LoRA and coef")
    ap.add_argument("--json", type=Path, help="also write the measurement as JSON here")
    args = ap.parse_args(argv)

    from bench.router_aux import measure, setup_from_config
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from mixtral_ft.models.tiny import build_tiny_mixtral, default_corpus

            model = build_tiny_mixtral(Path(tmp) / "tiny-mixtral", sample_path=default_corpus())
        values = render(
            RenderRequest(
                task=args.task, data_dir=Path(tmp), profile=args.profile, run_dir=Path(tmp), base_model=str(model)
            )
        ).values
        lora, coef = setup_from_config(values)
        m = measure(model, coef, lora)
    print(
        f"model: {m.model if args.model else 'tiny random Mixtral (built)'}; LoRA r={lora.r} alpha={lora.alpha} "
        f"on {','.join(lora.target_modules)}; router_aux_loss_coef={coef} ({args.task} + {args.profile}); "
        f"{m.tokens} tokens"
    )
    print(m.table())
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": m.model,
                    "lora": asdict(lora),
                    "coef": coef,
                    "tokens": m.tokens,
                    "results": [asdict(r) | {"logged_offset": r.logged_offset} for r in m.results],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
