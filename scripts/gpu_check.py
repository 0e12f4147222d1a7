"""The check for a bare GPU machine (`make gpu-wheelhouse`, `make gpu-install`, `make gpu-check`;
docs/design/gpu-check.md).

    # here, with PyPI: the wheels the machine lacks, slimmed and packed into .whl/partN/ that each
    # travel in one device call beside the working tree; prints the device calls to make
    .venv/bin/python scripts/gpu_check.py wheelhouse [--verify]

    # there (one H100/H200, no network, its own python3 with torch), one call per part, back to back:
    python3 scripts/gpu_check.py install --part N          # .whl/partN -> .gpu-site/partN (idempotent)
    python3 scripts/gpu_check.py run --out $OUT             # after the last part, in the same call

`run` checks that every part is installed, then runs the parts of the check (bench/gpucheck.py), each
in a process of its own under a time cap, and writes OUT/gpu_check.json, gpu_check.md and
gpu_check.log after each one, so a run cut short still leaves what it measured. A part that fails is
a row with its error; the next part runs. It starts no part once --budget-s is spent. Exit 0 when
every part ran and nothing is wrong, 1 otherwise, 2 for bad arguments, a wheelhouse part not
installed, or (without --allow-cpu) no CUDA device.
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
sys.path.insert(0, str(REPO / "scripts"))


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("layer counts must be positive integers")
    return values


def _cases(text: str) -> tuple[tuple[str, ...], ...]:
    from bench.stepbench import VARIANTS

    cases = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        pair, _, variant = item.partition("+")
        task, sep, profile = pair.partition("/")
        if not sep or task not in ("rg", "tc") or not profile or (variant and variant not in VARIANTS):
            raise argparse.ArgumentTypeError(
                f"expected TASK/PROFILE[+{'|'.join(VARIANTS)}] such as rg/h100-80gb, got {item!r}"
            )
        cases.append((task, profile, variant) if variant else (task, profile))
    if not cases:
        raise argparse.ArgumentTypeError("no cases given")
    return tuple(cases)


DEFAULT_CASES = "rg/h100-80gb,tc/h100-80gb,rg/a100-40gb,tc/a100-40gb,rg/h100-80gb+expert-lora,rg/a100-40gb+expert-lora"


def parser() -> argparse.ArgumentParser:
    from bench.gpucheck import PART_ORDER

    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    wh = sub.add_parser("wheelhouse", help="fetch, slim and pack the wheels the GPU machine lacks into .whl/partN")
    wh.add_argument("--dir", type=Path, default=REPO / ".whl")
    wh.add_argument("--check-only", action="store_true", help="only measure the parts already in --dir")
    wh.add_argument("--no-slim", action="store_true", help="carry the wheels whole (more parts, more calls)")
    wh.add_argument("--bnb-cuda", default="13", help="CUDA versions whose bitsandbytes kernels travel (13, 128, ...)")
    wh.add_argument("--verify", action="store_true", help="install the parts over the image's packages here and import")
    inst = sub.add_parser("install", help="on the GPU machine: install .whl/partN into .gpu-site/partN")
    inst.add_argument("--part", type=int, required=True)
    inst.add_argument("--dir", type=Path, default=REPO / ".whl")
    inst.add_argument("--site", type=Path, default=REPO / ".gpu-site")
    run = sub.add_parser("run", help="on the GPU machine: every part of the check -> OUT/gpu_check.json")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "out" / "gpu-check"))
    run.add_argument("--work", type=Path, default=Path("/tmp/mixft-gpu-check"), help="models and scratch (GBs)")
    run.add_argument("--site", default=str(REPO / ".gpu-site"), help="the installed wheelhouse, or 'none'")
    run.add_argument("--layers", type=_ints, default=(1, 2))
    run.add_argument("--width", choices=("full", "tiny"), default="full")
    run.add_argument("--cases", type=_cases, default=_cases(DEFAULT_CASES), help=f"default: {DEFAULT_CASES}")
    run.add_argument("--set", dest="overrides", action="append", default=[], help="override for every case key=value")
    run.add_argument("--steps", type=int, default=3)
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--train-steps", type=int, default=4)
    run.add_argument("--budget-s", type=float, default=500.0, help="start no part after this many seconds")
    run.add_argument("--skip", action="append", default=[], choices=PART_ORDER, help="a part not to run")
    run.add_argument("--allow-cpu", action="store_true", help="run on CPU (tiny width, cpu profile): the CPU test")
    part = sub.add_parser("part", help="(internal) one part of run, in its own process")
    part.add_argument("name", choices=PART_ORDER)
    part.add_argument("--ctx", type=Path, required=True)
    return ap


def wheelhouse(args) -> int:
    from bench.wheelhouse import (
        CARRY,
        MANIFEST,
        build_wheelhouse,
        render_plan,
        travel_bytes,
        wheelhouse_problems,
    )

    tree = travel_bytes(REPO)
    if args.check_only:
        path = args.dir / MANIFEST
        if not path.exists():
            print(f"error: {path}: no wheelhouse; run without --check-only first", file=sys.stderr)
            return 1
        manifest = dict(json.loads(path.read_text(encoding="utf-8")), tree_bytes=tree)
    else:
        try:
            manifest = build_wheelhouse(args.dir, tree, bnb_cuda=tuple(args.bnb_cuda.split(",")), slim=not args.no_slim)
        except (RuntimeError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(render_plan(manifest))
    problems = wheelhouse_problems(manifest, [c.name for c in CARRY])
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if args.verify and not problems:
        problems = verify(args.dir, manifest)
    return 1 if problems else 0


VERIFY_IMPORTS = (
    "bitsandbytes, peft, transformers, trl, datasets, axolotl.train, axolotl.cli.train, "
    "axolotl.monkeypatch.moe_quant, axolotl.monkeypatch.lora_kernels, mixtral_ft.train.probe, "
    "mixtral_ft.train.accumulation, mixtral_ft.cli.main"
)


def verify(whl: Path, manifest: dict) -> list[str]:
    """Install every part over a stand-in for the image's package set and import what a run imports."""
    import tempfile

    from bench.gpucheck import child_env
    from bench.wheelhouse import check_site, install_part, simulate_image

    with tempfile.TemporaryDirectory(prefix="mixft-verify-") as tmp:
        image = simulate_image(Path(tmp) / "image")
        for p in manifest["parts"]:
            install_part(whl / f"part{p['part']}", Path(tmp) / "site")
        dirs, problems = check_site(Path(tmp) / "site")
        env = child_env(REPO, [str(d) for d in dirs] + [str(image)])
        python = str(Path(tmp) / "image" / "venv" / "bin" / "python")
        proc = subprocess.run([python, "-c", f"import {VERIFY_IMPORTS}"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        problems.append(f"verify: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    print("verify: " + ("; ".join(problems) if problems else f"imports over the image's packages: {VERIFY_IMPORTS}"))
    return problems


def install(args) -> int:
    from bench.wheelhouse import install_part

    part_dir = args.dir / f"part{args.part}"
    if not part_dir.is_dir():
        print(f'error: {part_dir}: not here; name it in the call\'s carry ([".whl/part{args.part}"])', file=sys.stderr)
        return 2
    try:
        install_part(part_dir, args.site)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_part(args) -> int:
    """The child side of ``run``: one part, its result saved (partial results too) as JSON."""
    import traceback

    from bench.gpucheck import PARTS
    from mixtral_ft.util.atomic import atomic_write_text

    ctx = json.loads(args.ctx.read_text(encoding="utf-8"))
    path = Path(ctx["work"]) / "parts" / f"{args.name}.json"

    def save(result: dict, status: str = "running", error: str | None = None) -> None:
        atomic_write_text(path, json.dumps({"status": status, "error": error, "result": result}, default=str) + "\n")

    try:
        save(PARTS[args.name](ctx, save), "ok")
    except Exception as exc:  # noqa: BLE001 - the part is a row with its error; the parent goes on
        traceback.print_exc()
        previous = json.loads(path.read_text(encoding="utf-8"))["result"] if path.exists() else {}
        save(previous, "failed", f"{type(exc).__name__}: {exc}"[:500])
        return 1
    return 0


def _device_count(env: dict[str, str]) -> int:
    """CUDA devices as torch sees them, asked in a child process (this one never loads torch)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


def _context(args, site_dirs: list[str], device: str) -> dict:
    return {
        "repo": str(REPO),
        "out": str(args.out),
        "work": str(args.work),
        "site_dirs": site_dirs,
        "device": device,
        "profile": "h100-80gb" if device == "cuda" else "cpu",
        "width": args.width,
        "layers": list(args.layers),
        "cases": [list(c) for c in args.cases],
        "overrides": list(args.overrides),
        "steps": args.steps,
        "warmup": args.warmup,
        "train_steps": args.train_steps,
    }


def _prepare(args) -> tuple[dict, dict[str, str]] | int:
    """Check the arguments, the card and the installed wheelhouse before any work: the context and the
    children's environment, or exit status 2 after one line on stderr."""
    from bench.gpucheck import child_env
    from bench.stepbench import render_cases
    from bench.wheelhouse import check_site
    from mixtral_ft.axolotl_cfg.keys import snapshot_keys

    def refuse(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.steps < 1 or args.warmup < 0 or args.train_steps < 1:
        return refuse("--steps and --train-steps must be at least 1 and --warmup at least 0")
    site_dirs: list[str] = []
    if args.site != "none":
        dirs, problems = check_site(Path(args.site))
        if problems:
            return refuse(problems[0])
        site_dirs = [str(d) for d in dirs]
    try:  # a bad --set or profile fails here, before work; against the known-key snapshot (no Axolotl import)
        render_cases(args.cases, tuple(args.overrides), keys=snapshot_keys())
    except Exception as exc:  # noqa: BLE001 - MixftError, or a YAML error in --set
        return refuse(str(exc).splitlines()[0])
    env = child_env(REPO, site_dirs)
    cuda = _device_count(env) > 0
    if not cuda and not args.allow_cpu:
        return refuse("no CUDA device; this check is for a bare GPU machine (--allow-cpu runs it on CPU, tiny width)")
    if not cuda and args.width == "full":
        return refuse("--width full needs a CUDA device; use --width tiny on CPU")
    return _context(args, site_dirs, "cuda" if cuda else "cpu"), env


def _run_one(name: str, ctx_path: Path, env: dict[str, str], timeout: float, work: Path) -> dict:
    """One part in its own process; its row: status, wall time, error, result (partial on a failure)."""
    log = work / "logs" / f"{name}.log"
    result_path = work / "parts" / f"{name}.json"
    result_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    cmd = [sys.executable, str(Path(__file__).resolve()), "part", name, "--ctx", str(ctx_path)]
    with log.open("w", encoding="utf-8") as fh:
        try:
            rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO).returncode
            error = None
        except subprocess.TimeoutExpired:
            rc, error = None, f"did not finish within {timeout:.0f} s"
    saved = json.loads(result_path.read_text(encoding="utf-8")) if result_path.exists() else {}
    row = {"status": "ok", "wall_s": round(time.monotonic() - t0, 1), "result": saved.get("result") or {}}
    if rc != 0 or saved.get("status") != "ok":
        tail = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()][-1:]
        row.update(status="failed", error=error or saved.get("error") or f"exit status {rc}: {tail}"[:500])
    return row


def _write(out: Path, work: Path, summary: dict) -> None:
    from bench.gpucheck import render_markdown
    from mixtral_ft.util.atomic import atomic_write_text

    atomic_write_text(out / "gpu_check.json", json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    atomic_write_text(out / "gpu_check.md", render_markdown(summary))
    logs = []
    for path in sorted((work / "logs").glob("*.log"), key=lambda p: p.stat().st_mtime):
        text = path.read_text(encoding="utf-8", errors="replace")
        logs.append(f"===== {path.stem} =====\n{text[-1_000_000:]}")
    atomic_write_text(out / "gpu_check.log", "\n".join(logs))


def run(args) -> int:
    from bench.gpucheck import (
        PART_CAP_S,
        PART_MIN_S,
        PART_ORDER,
        SUMMARY_SCHEMA,
        expert_lora_comparison,
        part_problems,
        plan_comparison,
    )
    from mixtral_ft.util.atomic import atomic_write_text
    from mixtral_ft.util.provenance import now_iso

    started = time.monotonic()  # the budget counts from here
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    ctx, env = prepared
    for d in (args.out, args.work / "logs", args.work / "parts"):
        d.mkdir(parents=True, exist_ok=True)
    ctx_path = args.work / "context.json"
    atomic_write_text(ctx_path, json.dumps(ctx, indent=1) + "\n")
    summary: dict = {"schema": SUMMARY_SCHEMA, "started_at": now_iso(), "ended_at": None, "wall_s": None}
    summary.update(options=ctx, site={"dirs": ctx["site_dirs"]}, parts={}, problems=[], ok=False)
    for name in PART_ORDER:
        left = args.budget_s - (time.monotonic() - started)
        if name in args.skip or left < PART_MIN_S[name]:
            why = "--skip" if name in args.skip else f"budget spent ({left:.0f} s left of {args.budget_s:.0f})"
            summary["parts"][name] = {"status": "skipped", "why": why}
            if name not in args.skip:
                summary["problems"].append(f"{name}: not run, {why}")
        else:
            print(f"gpu-check: {name} (at most {min(PART_CAP_S[name], left):.0f} s) ...", file=sys.stderr, flush=True)
            row = _run_one(name, ctx_path, env, min(PART_CAP_S[name], left), args.work)
            summary["parts"][name] = row
            if row["status"] == "failed":
                summary["problems"].append(f"{name}: {row['error']}")
            summary["problems"] += part_problems(name, row["result"], ctx["device"])
            print(f"gpu-check: {name} {row['status']} in {row['wall_s']} s", file=sys.stderr, flush=True)
        if name == "stepbench" and ctx["device"] == "cuda" and summary["parts"][name].get("result"):
            summary["plan_comparison"] = plan_comparison(summary["parts"][name]["result"])
            summary["expert_lora"] = expert_lora_comparison(summary["plan_comparison"])
        summary["wall_s"] = round(time.monotonic() - started, 1)
        _write(args.out, args.work, summary)
    summary["ended_at"] = now_iso()
    summary["ok"] = not summary["problems"]
    _write(args.out, args.work, summary)
    print(json.dumps({k: summary[k] for k in ("ok", "problems", "wall_s")}, indent=1))
    print(f"summary: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    return 0 if summary["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"wheelhouse": wheelhouse, "install": install, "run": run, "part": run_part}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
