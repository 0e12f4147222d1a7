"""The kill and concurrency matrix (docs/design/fault-injection.md): real `mixft` processes, real signals, real races.

Kill matrix: each resumable command (prepare rg, prepare tc, generate, judge, train) is started and
stopped at N points of its run (default 10: events such as "lock taken", "staging folder made",
"k rows written", "checkpoint k saved", and delays after them), by SIGINT, SIGTERM and SIGKILL in
turn. A case *holds* when:

- SIGINT/SIGTERM: the exit code is 130/143, the last stderr line is the one ``interrupted (...)``
  line, and there is no traceback;
- no child process (read-pass workers, Axolotl) outlives the killed `mixft` (10 s grace);
- no staging folder or temporary file is left (after SIGKILL: the next run removes it);
- the same command run again (train: with ``--resume``) exits 0 and gives the right result:
  prepare: files byte-identical to an uninterrupted run; generate/judge: every id exactly once,
  complete lines, the manifest's rows and input hashes matching the file; train: a finished run
  at ``max_steps``.

Race matrix: every command with ``--out`` or ``--run-dir`` is started twice at once on the same
output (with ``--force`` where the command has it, so that both would write). A race *holds* when
no process fails in any other way than ``in use by pid N`` (exit 75) or a clean refusal, at least one
succeeds, and the output is whole and valid afterwards.

Hostile-YAML matrix: a "billion laughs" (~220 bytes that expand to 531,441 values), a recursive
alias, nesting 5,000 levels deep and a ``!!python/object/apply`` tag, given where mixft reads YAML:
a ``--set`` value (``config render``, ``train``), a user config and a profile (``MIXFT_CONFIGS_DIR``),
a pipeline file and a ``--var`` that a pipeline puts into a ``--set`` (``run``). A case *holds* when
the exit code is 2, the last stderr line is one ``error: ... YAML refused: ...`` line, there is no
traceback, and nothing was written (no config, no run directory, no pipeline output folder).

The race matrix also starts two ``mixft run`` of one small pipeline on the same output folder.

Usage::

    python scripts/fault_injection.py [--points 10] [--only prepare-rg,generate,yaml,...] [--work DIR] [--json FILE]

It builds what it needs in ``--work`` (a temporary folder by default): a tiny random Mixtral
(`mixft models tiny-mixtral`), inputs for every command. On a 2-core machine the whole matrix takes
about an hour, most of it Axolotl and model start-up; ``--only`` runs part of it. The table it
prints (cases, held, fell short) is what docs/reliability.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from support.fixtures_models import rg_rows, write_split  # noqa: E402
from support.reliability_helpers import (  # noqa: E402
    alive,
    descendants,
    lock_held,
    run,
    start,
    stop,
    wait_until,
    write_qa,
)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
EXPECTED_RC = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}


@dataclass
class Case:
    matrix: str  # kill | race | yaml
    command: str
    point: str
    held: bool = False
    why: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Work:
    root: Path
    qa: Path = Path()
    responses: Path = Path()
    tiny: Path = Path()
    rg_data: Path = Path()
    gen_data: Path = Path()
    verdicts: Path = Path()
    gold: Path = Path()
    gen_responses: Path = Path()  # generations of the tiny model: judge's input


# ------------------------------------------------------------------ inputs


def build_inputs(root: Path, need_model: bool) -> Work:
    w = Work(root)
    w.qa = write_qa(root / "qa.jsonl", 60_000)
    w.responses = root / "responses.jsonl"
    with open(w.responses, "w") as fh:
        for i in range(120_000):
            fh.write(
                json.dumps(
                    {
                        "id": f"r{i}",
                        "context": f"Fact {i}: the shop opens at {i % 12} am.",
                        "question": f"When does shop {i} open?",
                        "response": f"At {i % 12} am.",
                        "hallucinated": i % 4 == 0,
                    }
                )
                + "\n"
            )
    w.rg_data = write_split(root / "rg-data", rg_rows("train", 12), rg_rows("test", 4))
    w.gen_data = root / "gen-data.jsonl"
    with open(w.gen_data, "w") as fh:
        for i in range(12):
            fh.write(
                json.dumps(
                    {
                        "id": f"q{i}",
                        "context": f"The museum opens at {i} am.",
                        "question": f"When does museum {i} open?",
                        "answer": f"{i} am",
                    }
                )
                + "\n"
            )
    w.verdicts = root / "verdicts.jsonl"
    w.gold = root / "gold.jsonl"
    with open(w.verdicts, "w") as fv, open(w.gold, "w") as fg:
        for i in range(200):
            fv.write(
                json.dumps({"id": f"q{i}", "model": "m", "hallucinated": i % 5 == 0, "score": (i % 10) / 10}) + "\n"
            )
            fg.write(json.dumps({"id": f"q{i}", "model": "m", "hallucinated": i % 4 == 0}) + "\n")
    if need_model:
        w.tiny = root / "tiny"
        res = run(["models", "tiny-mixtral", "--out", w.tiny], root)
        if res.returncode != 0:
            raise SystemExit(f"could not build the tiny model: {res.stderr[-2000:]}")
    return w


# ------------------------------------------------------------------ kill matrix


def _leftovers(path: Path) -> list[str]:
    if not path.parent.is_dir():
        return []
    return sorted(
        p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and not p.name.endswith(".lock")
    )


def _jsonl_ids(path: Path) -> list[str]:
    text = path.read_text()
    if text and not text.endswith("\n"):
        raise AssertionError("torn last line")
    return [json.loads(line)["id"] for line in text.splitlines()]


@dataclass
class Resumable:
    """One resumable command: its arguments, its kill points, and how to check the end state."""

    name: str
    args: Callable[[Path], list]  # case folder -> argv
    out: Callable[[Path], Path]  # case folder -> the output to check for leftovers
    points: Callable[[Path, object, int], list[tuple[str, Callable[[], bool]]]]
    rerun: Callable[[Path], list]  # the command that finishes the job after a kill
    check: Callable[[Path], list[str]]  # problems with the finished output ([] = right)


def _after(delay: float, since: float | None = None) -> Callable[[], bool]:
    t0 = [since]

    def ready() -> bool:
        if t0[0] is None:
            t0[0] = time.monotonic()
        return time.monotonic() - t0[0] >= delay

    return ready


def _exists(path: Path) -> Callable[[], bool]:
    return path.exists


def _when_then(first: Callable[[], bool], delay: float) -> Callable[[], bool]:
    seen: list[float] = []

    def ready() -> bool:
        if not seen:
            if not first():
                return False
            seen.append(time.monotonic())
        return time.monotonic() - seen[0] >= delay

    return ready


def _rows_at_least(path: Path, n: int) -> Callable[[], bool]:
    return lambda: path.exists() and path.read_text().count("\n") >= n


def prepare_points(kind: str):
    def points(case: Path, _proc, n: int):
        out = case / "out"

        def staging() -> bool:
            return any(case.glob(".out.staging-*"))

        def work_files() -> bool:
            return any(case.glob(".out.staging-*/.work/t0-bucket*"))

        base = [
            ("just started", _after(0.3)),
            ("lock taken", lambda: lock_held(out)),
            ("staging folder made", staging),
            ("read pass writing", work_files),
        ]
        delays = [0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10]
        base += [(f"{d:g} s into the staging", _when_then(staging, d)) for d in delays]
        return base[:n]

    return points


def prepare_check(reference: Path) -> Callable[[Path], list[str]]:
    def check(case: Path) -> list[str]:
        out = case / "out"
        problems = []
        for name in ("train.jsonl", "test.jsonl"):
            if not (out / name).exists() or (out / name).read_bytes() != (reference / name).read_bytes():
                problems.append(f"{name} differs from an uninterrupted run")
        return problems

    return check


def infer_points(case: Path, _proc, n: int):
    out = case / "out.jsonl"
    manifest = case / "out.jsonl.manifest.json"
    base = [
        ("just started", _after(0.5)),
        ("lock taken", lambda: lock_held(case / "out.jsonl")),
        ("model loaded (manifest written)", manifest.exists),
    ]
    base += [(f"{k} row(s) written", _rows_at_least(out, k)) for k in range(1, 12)]
    return base[:n]


def infer_check(total: int) -> Callable[[Path], list[str]]:
    def check(case: Path) -> list[str]:
        from mixtral_ft.util.hashing import sha256_json

        out = case / "out.jsonl"
        problems = []
        try:
            ids = _jsonl_ids(out)
        except (OSError, AssertionError, ValueError) as e:
            return [f"output unreadable: {e}"]
        if sorted(ids) != sorted(set(ids)) or len(ids) != total:
            problems.append(f"{len(ids)} rows for {len(set(ids))} ids (want {total} once each)")
        m = json.loads((case / "out.jsonl.manifest.json").read_text())
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        entry = m["outputs"].get("out.jsonl", {})
        if entry.get("rows") != len(rows) or m["summary"]["done"] != total or m["summary"]["stopped"]:
            problems.append("the manifest does not describe the file")
        made = sorted([r["id"], r["input_sha256"]] for r in rows if r.get("error") is None)
        if entry.get("input_rows_sha256") != sha256_json(made):
            problems.append("input_rows_sha256 does not match the rows")
        return problems

    return check


def train_points(case: Path, _proc, n: int):
    run_dir = case / "run"
    log = run_dir / "train.log"

    def has(text: str) -> Callable[[], bool]:
        return lambda: log.exists() and text in log.read_text(errors="replace")

    def ck(k: int) -> Callable[[], bool]:
        return (run_dir / "output" / f"checkpoint-{k}" / "trainer_state.json").exists

    base = [
        ("lock taken", lambda: lock_held(run_dir)),
        ("Axolotl started", has("axolotl")),
        ("model loaded", has("Pre-saving")),
        ("trainer started", has("Starting trainer")),
    ]
    base += [(f"checkpoint {k} saved", ck(k)) for k in range(1, 6)]
    base += [("0.3 s after checkpoint 5", _when_then(ck(5), 0.3))]
    return base[:n]


def train_check(case: Path) -> list[str]:
    from mixtral_ft.train.rundir import RunState, run_status

    status = run_status(case / "run")
    if status.state is not RunState.FINISHED or status.step != 6:
        return [f"run is {status.state.value} at step {status.step}, want finished at 6"]
    return []


def train_rerun(train: Callable[[Path], list]) -> Callable[[Path], list]:
    """After a kill: ``--resume`` (docs/training.md, run states), or the same command when the
    kill came before the run wrote anything (state ``new``)."""

    def argv(case: Path) -> list:
        from mixtral_ft.train.rundir import RunState, run_status

        return train(case) + ([] if run_status(case / "run").state is RunState.NEW else ["--resume"])

    return argv


def kill_case(spec: Resumable, case: Path, point: str, ready: Callable[[], bool], sig: int) -> Case:
    result = Case("kill", spec.name, f"{point} / {signal.Signals(sig).name}")
    t0 = time.monotonic()
    case.mkdir(parents=True)
    proc = start(spec.args(case), case)
    try:
        wait_until(ready, timeout=900, proc=proc, what=point)
    except AssertionError as e:  # the run ended before the point: nothing was stopped
        result.why.append(f"ended before the kill point ({str(e)[:80]})")
        result.seconds = time.monotonic() - t0
        return result
    kids = [pid for pid, _ in descendants(proc.pid)]
    rc, _, err = stop(proc, sig, timeout=300)
    if rc != EXPECTED_RC[sig]:
        result.why.append(f"exit {rc}, want {EXPECTED_RC[sig]}")
    if sig != signal.SIGKILL:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if not last.startswith(f"interrupted ({signal.Signals(sig).name}): "):
            result.why.append(f"last line: {last[:100]!r}")
        if "Traceback" in err:
            result.why.append("traceback on stderr")
        if _leftovers(spec.out(case)):
            result.why.append(f"left {_leftovers(spec.out(case))}")
    try:
        wait_until(lambda: not alive(kids), timeout=10, what="children to exit")
    except AssertionError:
        result.why.append(f"orphans left running: {alive(kids)}")
        for pid in alive(kids):
            os.kill(pid, signal.SIGKILL)
    again = run(spec.rerun(case), case, timeout=1800)
    if again.returncode != 0:
        result.why.append(f"re-run exit {again.returncode}: {again.stderr.strip().splitlines()[-1:]}")
    else:
        result.why += spec.check(case)
    if _leftovers(spec.out(case)):
        result.why.append(f"left after the re-run: {_leftovers(spec.out(case))}")
    result.held = not result.why
    result.seconds = time.monotonic() - t0
    return result


def resumable_commands(w: Work) -> dict[str, Resumable]:
    ref = w.root / "reference"

    def gen_out(c: Path) -> Path:
        return c / "out.jsonl"

    def gen(c: Path) -> list:
        return [
            "generate",
            "--model",
            w.tiny,
            "--data",
            w.gen_data,
            "--out",
            c / "out.jsonl",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "1",
        ]

    def jud(c: Path) -> list:
        return [
            "judge",
            "--model",
            w.tiny,
            "--responses",
            w.gen_responses,
            "--out",
            c / "out.jsonl",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "1",
            "--no-score",
        ]

    def train(c: Path) -> list:
        return [
            "train",
            "rg",
            "--data",
            w.rg_data,
            "--profile",
            "cpu",
            "--base-model",
            w.tiny,
            "--run-dir",
            c / "run",
            "--set",
            "save_steps=1",
            "--set",
            "max_steps=6",
        ]

    return {
        "prepare rg": Resumable(
            "prepare rg",
            lambda c: ["prepare", "rg", w.qa, "--out", c / "out", "--workers", "2"],
            lambda c: c / "out",
            prepare_points("rg"),
            lambda c: ["prepare", "rg", w.qa, "--out", c / "out", "--workers", "2"],
            prepare_check(ref / "rg"),
        ),
        "prepare tc": Resumable(
            "prepare tc",
            lambda c: ["prepare", "tc", w.responses, "--out", c / "out"],
            lambda c: c / "out",
            prepare_points("tc"),
            lambda c: ["prepare", "tc", w.responses, "--out", c / "out"],
            prepare_check(ref / "tc"),
        ),
        "generate": Resumable("generate", gen, gen_out, infer_points, gen, infer_check(12)),
        "judge": Resumable("judge", jud, gen_out, infer_points, jud, infer_check(12)),
        "train": Resumable("train", train, lambda c: c / "run", train_points, train_rerun(train), train_check),
    }


def kill_matrix(w: Work, names: list[str], points: int, log) -> list[Case]:
    ref = w.root / "reference"
    ref.mkdir(exist_ok=True)
    specs = resumable_commands(w)
    cases: list[Case] = []
    for name in names:
        spec = specs[name]
        if name.startswith("prepare"):  # the uninterrupted result every re-run must equal
            kind = name.split()[1]
            res = run(["prepare", kind, w.qa if kind == "rg" else w.responses, "--out", ref / kind], ref)
            if res.returncode != 0:
                raise SystemExit(f"reference {name} failed: {res.stderr[-2000:]}")
        folder = w.root / "kill" / name.replace(" ", "-")
        for i in range(points):
            case_dir = folder / f"case{i:02d}"
            kill_points = spec.points(case_dir, None, points)  # bound to this case's folder
            if i >= len(kill_points):
                break
            point, ready = kill_points[i]
            case = kill_case(spec, case_dir, point, ready, SIGNALS[i % 3])
            cases.append(case)
            log(
                f"{'held' if case.held else 'FELL SHORT'}  {name:10s} {case.point:45s} {case.seconds:6.1f} s  "
                + "; ".join(case.why)
            )
            shutil.rmtree(case_dir, ignore_errors=True)
    return cases


# ------------------------------------------------------------------ race matrix


def race_commands(w: Work, run_dir: Path | None) -> dict[str, tuple[Callable[[Path], list], Callable[[Path], bool]]]:
    """name -> (case folder -> argv writing ``case/out``, case folder -> is the output whole)."""

    def dir_ok(*names: str) -> Callable[[Path], bool]:
        return lambda c: all((c / "out" / n).is_file() and (c / "out" / n).stat().st_size > 0 for n in names)

    def jsonl_ok(total: int) -> Callable[[Path], bool]:
        def ok(c: Path) -> bool:
            try:
                ids = _jsonl_ids(c / "out.jsonl")
            except (OSError, AssertionError, ValueError):
                return False
            return len(ids) == total == len(set(ids))

        return ok

    small_qa = w.root / "race-qa.jsonl"
    if not small_qa.exists():
        write_qa(small_qa, 5000)
    races = {
        "prepare rg": (
            lambda c: ["prepare", "rg", small_qa, "--out", c / "out", "--force"],
            dir_ok("train.jsonl", "test.jsonl", "manifest.json"),
        ),
        "prepare tc": (
            lambda c: ["prepare", "tc", w.responses, "--out", c / "out", "--force"],
            dir_ok("train.jsonl", "test.jsonl", "manifest.json"),
        ),
        "eval rg": (
            lambda c: ["eval", "rg", "--verdicts", w.verdicts, "--label", "x", "--out", c / "out", "--force"],
            dir_ok("results.json", "report.md"),
        ),
        "eval tc": (
            lambda c: [
                "eval",
                "tc",
                "--pred",
                w.verdicts,
                "--gold",
                w.gold,
                "--label",
                "x",
                "--out",
                c / "out",
                "--force",
            ],
            dir_ok("results.json", "report.md"),
        ),
        "eval pipeline": (
            lambda c: [
                "eval",
                "pipeline",
                "--gold",
                w.gold,
                "--checker",
                w.verdicts,
                "--label",
                "x",
                "--out",
                c / "out",
                "--force",
            ],
            dir_ok("results.json", "report.md"),
        ),
        "eval compare": (
            lambda c: ["eval", "compare", w.gold, w.verdicts, "--out", c / "out", "--force"],
            dir_ok("results.json", "report.md"),
        ),
        "report": (
            lambda c: ["report", w.root / "race-eval", "--out", c / "out", "--force"],
            dir_ok("report.md", "report.html", "report.json"),
        ),
        "config render": (
            lambda c: ["config", "render", "rg", "--data", w.rg_data, "--profile", "cpu", "--out", c / "out"],
            lambda c: (c / "out").is_file() and "base_model" in (c / "out").read_text(),
        ),
    }
    if w.tiny != Path():
        races |= {
            "models tiny-mixtral": (
                lambda c: ["models", "tiny-mixtral", "--out", c / "out", "--force"],
                dir_ok("config.json", "tokenizer.json"),
            ),
            "generate": (
                lambda c: [
                    "generate",
                    "--model",
                    w.tiny,
                    "--data",
                    w.gen_data,
                    "--out",
                    c / "out.jsonl",
                    "--max-new-tokens",
                    "4",
                    "--batch-size",
                    "4",
                ],
                jsonl_ok(12),
            ),
            "judge": (
                lambda c: [
                    "judge",
                    "--model",
                    w.tiny,
                    "--responses",
                    w.gen_responses,
                    "--out",
                    c / "out.jsonl",
                    "--max-new-tokens",
                    "4",
                    "--batch-size",
                    "4",
                    "--no-score",
                ],
                jsonl_ok(12),
            ),
            "train": (
                lambda c: [
                    "train",
                    "rg",
                    "--data",
                    w.rg_data,
                    "--profile",
                    "cpu",
                    "--base-model",
                    w.tiny,
                    "--run-dir",
                    c / "out",
                    "--set",
                    "max_steps=2",
                    "--set",
                    "save_steps=2",
                    "--set",
                    "eval_steps=2",
                ],
                lambda c: (c / "out" / "output" / "adapter_model.safetensors").exists(),
            ),
        }
    if run_dir is not None:
        races["merge"] = (lambda c: ["merge", run_dir, "--out", c / "out", "--force"], dir_ok("config.json"))
    races["run"] = (lambda c: ["run", _small_pipeline(w, c), "--out", c / "out"], _pipeline_ok)
    return races


def _small_pipeline(w: Work, case: Path) -> Path:
    """Three quick stages (two evals and a report) for the `mixft run` race."""
    path = case / "small.yml"
    path.write_text(
        "vars: {out: out}\n"
        "stages:\n"
        f"  - name: a\n    run: eval rg --verdicts {w.verdicts} --label a --out ${{out}}/a\n"
        f"  - name: b\n    run: eval tc --pred {w.verdicts} --gold {w.gold} --label b --out ${{out}}/b\n"
        "  - name: report\n    run: report ${stages.a.out} ${stages.b.out} --out ${out}/report\n"
    )
    return path


def _pipeline_ok(case: Path) -> bool:
    state = case / "out" / "mixft-run.json"
    if not state.is_file() or not (case / "out" / "report" / "report.md").is_file():
        return False
    return {s["status"] for s in json.loads(state.read_text())["stages"].values()} == {"done"}


def race_case(name: str, argv: Callable[[Path], list], ok: Callable[[Path], bool], case: Path) -> Case:
    result = Case("race", name, "two at once")
    t0 = time.monotonic()
    case.mkdir(parents=True)
    procs = [start(argv(case), case) for _ in range(2)]
    outs = [p.communicate(timeout=1800) for p in procs]
    codes = [p.returncode for p in procs]
    for i, ((_, err), code) in enumerate(zip(outs, codes)):
        if "Traceback" in err:
            result.why.append("traceback")
        if code not in (0, 75):
            result.why.append(f"exit {code}: {err.strip().splitlines()[-1:]}")
        if code == 75 and f"in use by pid {procs[1 - i].pid}" not in err:
            result.why.append("the refusal does not name the other process")
    if 0 not in codes:
        result.why.append(f"no run succeeded ({codes})")
    if not ok(case):
        result.why.append("the output is not whole")
    result.point = f"two at once: exit codes {sorted(codes)}"
    result.held = not result.why
    result.seconds = time.monotonic() - t0
    return result


def race_matrix(w: Work, names: list[str] | None, run_dir: Path | None, log) -> list[Case]:
    if not (w.root / "race-eval").exists():
        run(["eval", "rg", "--verdicts", w.verdicts, "--label", "x", "--out", w.root / "race-eval"], w.root)
    cases = []
    for name, (argv, ok) in race_commands(w, run_dir).items():
        if names and name not in names:
            continue
        case_dir = w.root / "race" / name.replace(" ", "-")
        case = race_case(name, argv, ok, case_dir)
        cases.append(case)
        log(
            f"{'held' if case.held else 'FELL SHORT'}  race {name:20s} {case.point:30s} {case.seconds:6.1f} s  "
            + "; ".join(case.why)
        )
        shutil.rmtree(case_dir, ignore_errors=True)
    return cases


# ------------------------------------------------------------------ hostile YAML

BOMB = (
    '[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a],'
    "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b],&d [*c,*c,*c,*c,*c,*c,*c,*c,*c],&e [*d,*d,*d,*d,*d,*d,*d,*d,*d],"
    "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
)
HOSTILE = {
    "billion laughs": BOMB,
    "recursive alias": "&r [*r]",
    "5,000 levels": "[" * 5000 + "]" * 5000,
    "python tag": "!!python/object/apply:os.system [touch pwned]",
}


def _configs_with(case: Path, where: str, value: str) -> dict[str, str]:
    """A copy of the shipped configs with ``special_tokens: VALUE`` added to ``where``."""
    configs = case / "configs"
    shutil.copytree(REPO / "configs", configs)
    target = configs / where
    target.write_text(target.read_text() + f"\nspecial_tokens: {value}\n")
    return {"MIXFT_CONFIGS_DIR": str(configs)}


def yaml_cases(w: Work) -> list[tuple[str, Callable[[Path, str], tuple[list, dict[str, str], Path]]]]:
    """(where the YAML is read, case folder + hostile text -> (argv, extra environment, the output
    that must not exist))."""
    render = ["config", "render", "rg", "--data", w.rg_data, "--profile", "cpu", "--no-validate"]

    def pipeline(case: Path, value: str, via_var: bool) -> Path:
        path = case / "p.yml"
        tokens = '"[]"' if via_var else value
        path.write_text(
            f"vars:\n  out: out\n  tokens: {tokens}\nstages:\n  - name: train\n"
            f"    run: train rg --data {w.rg_data} --profile cpu --run-dir ${{out}}/run --set special_tokens=${{tokens}}\n"
        )
        return path

    return [
        (
            "config render --set",
            lambda c, v: ([*render, "--set", f"special_tokens={v}", "--out", c / "x.yml"], {}, c / "x.yml"),
        ),
        (
            "train --set",
            lambda c, v: (
                [
                    "train",
                    "rg",
                    "--data",
                    w.rg_data,
                    "--profile",
                    "cpu",
                    "--set",
                    f"special_tokens={v}",
                    "--run-dir",
                    c / "run",
                ],
                {},
                c / "run",
            ),
        ),  # fmt: skip
        ("user config", lambda c, v: ([*render, "--out", c / "x.yml"], _configs_with(c, "rg.yml", v), c / "x.yml")),
        (
            "profile",
            lambda c, v: ([*render, "--out", c / "x.yml"], _configs_with(c, "profiles/cpu.yml", v), c / "x.yml"),
        ),
        ("pipeline file", lambda c, v: (["run", pipeline(c, v, False)], {}, c / "out")),
        ("run --var into --set", lambda c, v: (["run", pipeline(c, v, True), "--var", f"tokens={v}"], {}, c / "out")),
    ]


def yaml_matrix(w: Work, log) -> list[Case]:
    cases = []
    for where, build in yaml_cases(w):
        for name, value in HOSTILE.items():
            result = Case("yaml", where, name)
            t0 = time.monotonic()
            case = w.root / "yaml" / f"{where.replace(' ', '-')}-{name.replace(' ', '-').replace(',', '')}"
            case.mkdir(parents=True)
            argv, extra, output = build(case, value)
            res = run(argv, case, extra=extra)
            last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
            if res.returncode != 2:
                result.why.append(f"exit {res.returncode}, want 2")
            if not (last.startswith("error: ") and "YAML refused: " in last):
                result.why.append(f"last line: {last[:120]!r}")
            if "Traceback" in res.stderr:
                result.why.append("traceback on stderr")
            if output.exists() or (case / "pwned").exists():
                result.why.append(f"{output.name} was written")
            result.held = not result.why
            result.seconds = time.monotonic() - t0
            cases.append(result)
            log(
                f"{'held' if result.held else 'FELL SHORT'}  yaml {where:22s} {name:16s} {result.seconds:6.1f} s  "
                + "; ".join(result.why)
            )
            shutil.rmtree(case, ignore_errors=True)
    return cases


# ------------------------------------------------------------------ table


def table(cases: list[Case]) -> str:
    rows = ["| matrix | command | cases | held | fell short |", "|---|---|---|---|---|"]
    keys: list[tuple[str, str]] = []
    for c in cases:
        if (c.matrix, c.command) not in keys:
            keys.append((c.matrix, c.command))
    for matrix, command in keys:
        mine = [c for c in cases if (c.matrix, c.command) == (matrix, command)]
        held = sum(c.held for c in mine)
        rows.append(f"| {matrix} | {command} | {len(mine)} | {held} | {len(mine) - held} |")
    held = sum(c.held for c in cases)
    rows.append(f"| **all** | | **{len(cases)}** | **{held}** | **{len(cases) - held}** |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=10, help="kill points per resumable command")
    ap.add_argument("--only", default="", help="comma-separated commands (e.g. prepare-rg,generate,race)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write every case here")
    args = ap.parse_args(argv)
    only = {x.strip().replace("-", " ") for x in args.only.split(",") if x.strip()}
    kill_names = [n for n in ("prepare rg", "prepare tc", "generate", "judge", "train") if not only or n in only]
    race_names = None if not only or "race" in only else sorted(only - {"yaml"})
    need_model = (
        any(n in kill_names for n in ("generate", "judge", "train"))
        or race_names is None
        or any(n in (race_names or []) for n in ("generate", "judge", "train", "merge", "models tiny-mixtral"))
    )
    root = args.work or Path(tempfile.mkdtemp(prefix="mixft-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"work folder: {root}")
    w = build_inputs(root, need_model)
    if need_model:  # judge reads generations of the tiny model
        gens = root / "gens.jsonl"
        res = run(["generate", "--model", w.tiny, "--data", w.gen_data, "--out", gens, "--max-new-tokens", "8"], root)
        if res.returncode != 0:
            raise SystemExit(f"could not generate the judge's input: {res.stderr[-2000:]}")
        w.gen_responses = gens
    cases = kill_matrix(w, kill_names, args.points, log)
    run_dir = None
    if need_model and (race_names is None or "merge" in race_names):
        run_dir = root / "merge-run"
        res = run(
            [
                "train",
                "rg",
                "--data",
                w.rg_data,
                "--profile",
                "cpu",
                "--base-model",
                w.tiny,
                "--run-dir",
                run_dir,
                "--set",
                "max_steps=2",
                "--set",
                "save_steps=2",
                "--set",
                "eval_steps=2",
            ],
            root,
        )
        run_dir = run_dir if res.returncode == 0 else None
    if race_names is None or race_names:
        cases += race_matrix(w, race_names, run_dir, log)
    if not only or "yaml" in only:
        cases += yaml_matrix(w, log)
    print()
    print(table(cases))
    print(f"\n{len(cases)} cases in {(time.monotonic() - t0) / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in cases], indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(c.held for c in cases) else 1


if __name__ == "__main__":
    sys.exit(main())
