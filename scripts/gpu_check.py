"""The check for a bare GPU machine (`make gpu-check`; docs/design/gpu-check.md).

Two commands:

    # here, with the network: the wheels the machine lacks, into .whl/, size-checked (<= 64 MiB with the tree)
    .venv/bin/python scripts/gpu_check.py wheelhouse

    # there (one H100/H200, no network, its own python3 with torch): what `make gpu-check` runs
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:src python3 scripts/gpu_check.py run --out $OUT

`run` records the machine, runs the `gpu` test tier (the modules that hold gpu-marked tests), then
the step benchmark (`scripts/bench/stepbench.py`: full-width Mixtral at 1 and 2 layers, each
(task, profile) micro batch, QLoRA through mixft's 4-bit plan and peft), and writes one JSON
summary, OUT/gpu_check.json, after every stage, so a run cut short still leaves what it measured.
It stops starting stages once --budget-s is spent. Exit 0 when every test passed and every case
fits its card, 1 otherwise, 2 for bad arguments or (without --allow-cpu) no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the machine runs from the working tree, without installing mixft


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("layer counts must be positive integers")
    return values


def _cases(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        task, sep, profile = item.partition("/")
        if not sep or task not in ("rg", "tc") or not profile:
            raise argparse.ArgumentTypeError(f"expected TASK/PROFILE such as rg/a100-80gb, got {item!r}")
        pairs.append((task, profile))
    if not pairs:
        raise argparse.ArgumentTypeError("no cases given")
    return tuple(pairs)


def parser() -> argparse.ArgumentParser:
    from bench.stepbench import DEFAULT_CASES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    wh = sub.add_parser("wheelhouse", help="download the wheels the GPU machine lacks and check their size")
    wh.add_argument("--dir", type=Path, default=REPO / ".whl")
    wh.add_argument("--check-only", action="store_true", help="only measure what is in --dir")
    run = sub.add_parser("run", help="on the GPU machine: gpu tests + step benchmark -> OUT/gpu_check.json")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "out" / "gpu-check"))
    run.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/mixft-gpu-check"),
        help="models and scratch (GBs at full width; never under --out, which travels back)",
    )
    run.add_argument("--layers", type=_ints, default=(1, 2))
    run.add_argument("--width", choices=("full", "tiny"), default="full")
    run.add_argument(
        "--cases",
        type=_cases,
        default=DEFAULT_CASES,
        help="comma-separated TASK/PROFILE pairs (default: the four distinct micro batch shapes)",
    )
    run.add_argument("--set", dest="overrides", action="append", default=[], help="override for every case key=value")
    run.add_argument("--steps", type=int, default=3)
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--budget-s", type=float, default=540.0, help="start no stage after this many seconds")
    run.add_argument("--test-timeout-s", type=float, default=240.0)
    run.add_argument("--skip-tests", action="store_true")
    run.add_argument("--skip-bench", action="store_true")
    run.add_argument("--allow-cpu", action="store_true", help="run on CPU (the CPU test of this script)")
    return ap


def wheelhouse(args) -> int:
    from bench.gpucheck import (
        WHEEL_PACKAGES,
        pinned_versions,
        pip_download_command,
        scan_wheelhouse,
        travel_bytes,
        wheel_name,
        wheelhouse_report,
    )
    from mixtral_ft.util.atomic import atomic_write_text

    pins = pinned_versions()
    args.dir.mkdir(parents=True, exist_ok=True)
    if not args.check_only:
        wanted = {f"{name.lower().replace('_', '-')}": v for name, v in pins.items()}
        for stale in args.dir.glob("*.whl"):  # another version of a package would stop the install there
            if wheel_name(stale.name) not in wanted or f"-{wanted[wheel_name(stale.name)]}-" not in stale.name:
                stale.unlink()
        proc = subprocess.run(
            pip_download_command(args.dir, pins, python=sys.executable), text=True, capture_output=True, check=False
        )
        if proc.returncode != 0:
            print(f"error: pip download failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
            return 1
    report = wheelhouse_report(scan_wheelhouse(args.dir), travel_bytes(REPO), [n for n, _ in WHEEL_PACKAGES])
    report["pins"] = pins
    atomic_write_text(args.dir / "wheelhouse.json", json.dumps(report, indent=2) + "\n")
    for w in report["wheels"]:
        print(f"{w['mib']:8.2f} MiB  {w['file']}")
    print(
        f"wheels {report['wheels_mib']} MiB + working tree {report['tree_mib']} MiB = {report['total_mib']} MiB "
        f"of {report['limit_mib']} MiB ({'fits' if report['fits'] else 'does NOT fit'})"
    )
    for p in report["problems"]:
        print(f"error: {p}", file=sys.stderr)
    return 0 if report["fits"] else 1


def environment_record() -> dict:
    import importlib
    import platform
    from importlib import metadata

    env: dict = {"python": platform.python_version(), "packages": {}}
    for name in ("torch", "transformers", "bitsandbytes", "peft", "accelerate", "axolotl", "flash-attn", "deepspeed"):
        try:
            env["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env["packages"][name] = None
    import torch

    env["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = {
            "name": props.name,
            "total_gib": round(props.total_memory / 2**30, 2),
            "capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(),
        }
    else:
        env["device"] = None
    try:
        importlib.import_module("flash_attn")
        env["flash_attn_imports"] = True
    except Exception:  # noqa: BLE001 - absent, or built for another torch (an undefined symbol)
        env["flash_attn_imports"] = False
    return env


def run_tests(out: Path, timeout_s: float) -> dict:
    from bench.gpucheck import gpu_test_files, parse_junit

    files = gpu_test_files(REPO / "tests")
    junit = out / "gpu-tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"--junitxml={junit}",
        *map(str, files),
    ]
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        AXOLOTL_DO_NOT_TRACK="1",
        # scripts/ for bench.* (test_gpu.py): pytest's `pythonpath` setting may be newer than the machine's pytest
        PYTHONPATH=os.pathsep.join(
            filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "src"), str(REPO / "scripts")])
        ),
    )
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        status, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        status, text = (
            "timeout",
            (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""),
        )
    (out / "gpu-tests.log").write_text(text[-200_000:], encoding="utf-8")
    result = {
        "files": [str(f.relative_to(REPO)) for f in files],
        "exit_status": status,
        "wall_s": round(time.monotonic() - t0, 1),
        "passed": 0,
        "failed": 0,
        "errors": 0,
        "skipped": 0,
    }
    if junit.exists():
        result.update(parse_junit(junit))
    elif status == "timeout":
        result["errors"] = 1
        result["failures"] = [f"the gpu tier did not finish within {timeout_s:.0f} s"]
    return result


def run(args) -> int:
    import torch

    from bench.gpucheck import SUMMARY_SCHEMA, bench_problems
    from bench.membench import render_table
    from bench.stepbench import StepBenchOptions, render_cases, run_stepbench
    from mixtral_ft.util.atomic import atomic_write_text
    from mixtral_ft.util.provenance import now_iso

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "error: no CUDA device; this check is for a GPU machine (--allow-cpu runs it on CPU, tiny width only)",
            file=sys.stderr,
        )
        return 2
    if args.width == "full" and not torch.cuda.is_available():
        print("error: --width full needs a CUDA device; use --width tiny on CPU", file=sys.stderr)
        return 2
    if args.steps < 1 or args.warmup < 0:
        print("error: --steps must be at least 1 and --warmup at least 0", file=sys.stderr)
        return 2
    cases = tuple(render_cases(args.cases, tuple(args.overrides)))  # bad --set or profile fails here, before work
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict = {
        "schema": SUMMARY_SCHEMA,
        "started_at": now_iso(),
        "ended_at": None,
        "wall_s": None,
        "environment": environment_record(),
        "tests": None,
        "bench": None,
        "ok": False,
        "problems": [],
        "stages": {},
        "options": {
            "layers": list(args.layers),
            "width": args.width,
            "cases": [c.name for c in cases],
            "overrides": list(args.overrides),
            "steps": args.steps,
            "warmup": args.warmup,
            "budget_s": args.budget_s,
        },
    }
    path = args.out / "gpu_check.json"

    def flush() -> None:
        summary["wall_s"] = round(time.monotonic() - started, 1)
        atomic_write_text(path, json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")

    def stage(name: str, skip: bool, fn) -> None:
        left = args.budget_s - (time.monotonic() - started)
        if skip or left <= 0:
            summary["stages"][name] = {"status": "skipped", "why": "--skip-" + name if skip else "budget spent"}
            flush()
            return
        summary["stages"][name] = {"status": "running"}
        flush()
        t0 = time.monotonic()
        try:
            fn(left)
            summary["stages"][name] = {"status": "ok", "wall_s": round(time.monotonic() - t0, 1)}
        except Exception as exc:  # noqa: BLE001 - record it and go on: the next stage still measures
            summary["stages"][name] = {
                "status": "failed",
                "wall_s": round(time.monotonic() - t0, 1),
                "error": f"{type(exc).__name__}: {exc}"[:500],
            }
            summary["problems"].append(f"{name}: {type(exc).__name__}: {exc}"[:500])
        flush()

    def tests(left: float) -> None:
        summary["tests"] = run_tests(args.out, min(args.test_timeout_s, left))
        t = summary["tests"]
        summary["problems"] += [f"gpu test: {f}" for f in t.get("failures", [])]
        if t["exit_status"] not in (0, 5) and not t.get("failures"):  # 5: nothing collected
            summary["problems"].append(f"gpu tests: pytest exit status {t['exit_status']} (see gpu-tests.log)")

    def bench(left: float) -> None:
        results = run_stepbench(
            StepBenchOptions(
                layers=args.layers,
                cases=cases,
                out=args.work,
                width=args.width,
                device="cuda" if torch.cuda.is_available() else "cpu",
                steps=args.steps,
                warmup=args.warmup,
            ),
            say=lambda m: print(m, file=sys.stderr, flush=True),
        )
        summary["bench"] = results
        summary["problems"] += bench_problems(results)
        atomic_write_text(args.out / "bench.md", render_table(results["rows"], results["fits"]))

    stage("tests", args.skip_tests, tests)
    stage("bench", args.skip_bench, bench)
    summary["ended_at"] = now_iso()
    summary["ok"] = not summary["problems"] and all(
        s["status"] in ("ok", "skipped") for s in summary["stages"].values()
    )
    flush()
    print(json.dumps({k: summary[k] for k in ("ok", "problems", "wall_s")}, indent=1))
    print(f"summary: {path}")
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    args = parser().parse_args(argv)
    from mixtral_ft.errors import MixftError

    try:
        return wheelhouse(args) if args.command == "wheelhouse" else run(args)
    except MixftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
