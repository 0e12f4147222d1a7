#!/usr/bin/env python
"""Benchmark `mixft prepare rg` throughput and peak memory (start-up time: scripts/bench_cli.py).

Generates raw Q&A JSONL files of about 2.5 KB per row (three context snippets, some repeated
rows, some Unicode and messy whitespace) in a temporary directory, runs `mixft prepare rg` on
each as a subprocess and reports rows/s and the child's peak RSS. Memory should not grow with
the input size. Not a test: run it by hand (takes a few minutes for 1M rows, ~2.6 GB of disk).

    .venv/bin/python scripts/bench_prepare.py                 # 100k and 1M rows
    .venv/bin/python scripts/bench_prepare.py --rows 100000   # one size only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the account password reset billing invoice plan upgrade router firmware cable signal "
    "warranty refund shipping order tracking login two-factor device café résumé naïve "
    "setting profile export report dashboard sync backup restore license seat admin"
).split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """Write ``rows`` raw rows; returns the file size in bytes."""
    rng = random.Random(seed)
    pool = [_sentence(rng, 14) for _ in range(5000)]  # sampling whole sentences keeps generation fast
    questions = [_sentence(rng, 12) for _ in range(5000)]
    pick = rng.choice
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            snippets = [" ".join(pick(pool) for _ in range(6)) for _ in range(3)]
            row = {
                "id": f"q{i}",
                # every row has messy whitespace to normalize: leading and double spaces, tabs
                "question": "  " + pick(questions).replace(" ", "  ", 2) + f" (case {i})?",
                "context": snippets,
                "answer": "\t".join(pick(pool) for _ in range(3)),
                "article_id": f"kb-{i // 5}",
                "source": "synthetic" if i % 4 else "live",
            }
            line = json.dumps(row, ensure_ascii=False) + "\n"
            fh.write(line)
            if i % 1000 == 999:  # a few exact duplicates
                fh.write(line.replace(f'"q{i}"', f'"q{i}-dup"'))
    return path.stat().st_size


_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": proc.returncode, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_rss_kib": ru.ru_maxrss, "stderr": proc.stderr}))
"""


def run_prepare(mixft: str, raw: Path, out: Path, extra: list[str]) -> dict:
    """Run prepare rg under a fresh measuring parent, so ``ru_maxrss`` is this run's own peak
    (the largest of mixft and its worker processes) and CPU time is this run's alone."""
    cmd = [mixft, "prepare", "rg", str(raw), "--out", str(out), "--test-size", "0.1", *extra]
    env = dict(os.environ, MIXFT_TIMING="1", MIXFT_PROGRESS="0")
    res = json.loads(
        subprocess.run(
            [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, env=env, check=True
        ).stdout
    )
    if res["rc"] != 0:
        sys.exit(f"prepare rg failed ({res['rc']}):\n{res['stderr']}")
    manifest = json.loads((out / "manifest.json").read_text())
    res["read"] = manifest["summary"]["read"]
    res["phases"] = " ".join(line.split(" ", 1)[1] for line in res["stderr"].splitlines() if line.startswith("timing:"))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="Row counts to run (default 100000 and 1000000).")
    ap.add_argument("--workers", type=int, default=0, help="--workers for prepare rg (0 = automatic).")
    ap.add_argument("--dir", type=Path, default=None, help="Scratch directory (default: a temp dir, removed).")
    args = ap.parse_args()
    mixft = str(Path(sys.executable).with_name("mixft"))
    if not Path(mixft).exists():
        mixft = shutil.which("mixft") or sys.exit("mixft not found; install the package first")
    sizes = sorted(args.rows or [100_000, 1_000_000])
    scratch = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir=args.dir))
    try:
        for rows in sizes:
            raw = scratch / f"raw-{rows}.jsonl"
            t0 = time.perf_counter()
            size = generate(raw, rows)
            gen = time.perf_counter() - t0
            r = run_prepare(mixft, raw, scratch / f"out-{rows}", ["--workers", str(args.workers)])
            print(
                f"{r['read']:>9,} rows  {size / r['read'] / 1024:.2f} KiB/row  {size / 2**20:,.0f} MiB  "
                f"prepare {r['wall_s']:.1f} s = {r['read'] / r['wall_s']:,.0f} rows/s  "
                f"peak RSS {r['peak_rss_kib'] / 1024:.0f} MiB  CPU {r['cpu_s']:.1f} s "
                f"({r['cpu_s'] / r['read'] * 1e6:.0f} us/row)  [{r['phases']}]  (generated in {gen:.0f} s)",
                flush=True,
            )
            raw.unlink()
            shutil.rmtree(scratch / f"out-{rows}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu cores: {os.cpu_count()}, load average now {load:.1f} (other processes share these cores)")


if __name__ == "__main__":
    main()
