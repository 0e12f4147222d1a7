#!/usr/bin/env python
"""Benchmark `mixft --help` start-up: wall time of the installed executable, and what it imports.

Runs `mixft --help` as a subprocess (two warm-up runs, then --runs timed ones) and reports the
median, fastest and slowest wall time, the median CPU time, the load average before and after
(other processes on the same cores slow every run), the modules that must stay off the path
(torch, transformers, datasets, pyarrow, rich's tables, Axolotl) and the largest cumulative
import times (`python -X importtime`). Not a test: run it by hand on an otherwise idle machine.

    .venv/bin/python scripts/bench_cli.py
    .venv/bin/python scripts/bench_cli.py --runs 31 -- generate --help
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.2
HEAVY = ("torch", "transformers", "datasets", "pyarrow", "rich.table", "axolotl", "numpy")

_MODULES = """
import sys
from mixtral_ft.cli.main import main
code = main(sys.argv[1:])
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
"""


def _load() -> str:
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed_runs(mixft: str, args: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall time and CPU time (user + system) of each run; CPU time moves less than wall time
    when other processes share the cores."""
    for _ in range(2):  # warm the page cache and the bytecode caches
        subprocess.run([mixft, *args], capture_output=True, check=True)
    walls, cpus = [], []
    for _ in range(runs):
        cpu0, start = _children_cpu(), time.perf_counter()
        subprocess.run([mixft, *args], capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu0)
    return walls, cpus


def imported_modules(args: list[str]) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _MODULES, *args], capture_output=True, text=True, check=True)
    return set(proc.stderr.split())


def heaviest_imports(args: list[str], top: int) -> list[tuple[float, str]]:
    """The ``top`` largest cumulative import times (ms) of one run under ``-X importtime``, of the
    modules imported at the top level and by them (indented)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mixtral_ft.cli", *args], capture_output=True, text=True
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 1:
            rows.append((int(cumulative) / 1000, "  " * depth + name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="Timed runs (default 15).")
    ap.add_argument("--top", type=int, default=12, help="Largest imports to list (default 12).")
    ap.add_argument("args", nargs="*", default=["--help"], help="mixft arguments (default --help).")
    ns = ap.parse_args()
    mixft = str(Path(sys.executable).with_name("mixft"))
    if not Path(mixft).exists():
        mixft = shutil.which("mixft") or sys.exit("mixft not found; install the package first")
    command = " ".join(["mixft", *ns.args])
    print(f"cpu cores: {os.cpu_count()}, load average before: {_load()}")
    times, cpus = timed_runs(mixft, ns.args, ns.runs)
    median = statistics.median(times)
    print(
        f"{command}: median {median:.3f} s over {ns.runs} runs (fastest {min(times):.3f}, slowest "
        f"{max(times):.3f}); target <= {TARGET_S} s: {'met' if median <= TARGET_S else 'NOT met'}"
    )
    print(f"CPU time (user + system): median {statistics.median(cpus):.3f} s")
    print(f"load average after: {_load()} (other processes on these cores slow every run)")
    modules = imported_modules(ns.args)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)
    print(f"modules imported: {len(modules)}; of {', '.join(HEAVY)}: {', '.join(heavy) or 'none'}")
    print("largest imports, top level and their imports indented (cumulative, one run):")
    for ms, name in heaviest_imports(ns.args, ns.top):
        print(f"  {ms:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
