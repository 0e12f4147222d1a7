"""The whole pipeline on a CPU, on the bundled sample data, in one call.

prepare rg -> train rg -> generate (raw and fine-tuned) -> prepare tc -> train tc -> judge ->
eval rg / tc / pipeline / compare -> report. Each stage is the same library function its
``mixft`` command calls; the demo only chooses small slices and few steps so that it ends in
minutes. Finished stages are recorded in ``OUT/demo_state.json``; running the demo again
continues after the last finished stage (``--force`` starts over).

A few CPU steps on a 135M model (or a random tiny Mixtral) show the mechanics, not the quality
of the reference report's Mixtral runs: the report written at the end says so.

A stage that fails stops the demo with the stage's name and its message; nothing later runs
and the failed stage is not recorded as finished, so running the demo again retries it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import MixftError, UsageError, suggest
from mixtral_ft.resources import data_dir as _bundled_data_dir


class DemoStageError(MixftError):
    """A stage of the demo failed; the message names the stage and says why."""


def _stage_error(message: str, cause: MixftError) -> DemoStageError:
    err = DemoStageError(message)
    err.exit_code = cause.exit_code
    return err


DEFAULT_DATA_DIR = _bundled_data_dir()  # the sample data shipped in the package

QUALITY_NOTE = (
    "**What this demo shows and what it does not.** Every number below comes from a few optimizer "
    "steps on a CPU, with a {model} and a small slice of the bundled fictional data set. It proves that "
    "the stages fit together (data preparation, Axolotl training with the prompt masked, generation, "
    "truth-checking, evaluation with intervals, this report); it says nothing about the quality the "
    "reference report reached with Mixtral-8x7B-Instruct after 5 epochs of QLoRA on an A100 "
    "(8.0% -> 4.5% hallucination, 62.5% -> 96.0% truth-checker accuracy). Intervals this wide are the "
    "honest reading of so few items. The hallucination rates are judged by the demo's own trained checker: "
    "beside each is the rate corrected for that checker's error, measured on the TC test split, or why it "
    'cannot be corrected; a checker that never flags makes a judged 0.0% "not identifiable", not a clean '
    "model. For the quality path, run the GPU commands in README.md "
    '("On a GPU box").'
)


@dataclass(frozen=True)
class DemoScale:
    """How much of everything the demo uses for one model."""

    description: str
    rg_test_size: int  # prepared RG test rows (by article)
    tc_test_size: int  # prepared TC test rows (by article)
    generate_limit: int  # RG test rows generated for, raw and fine-tuned
    rg_steps: int
    tc_steps: int
    rg_learning_rate: float
    tc_learning_rate: float  # higher: in a dozen steps the checker must at least learn the verdict format
    tc_sequence_len: int
    generate_tokens: int
    judge_tokens: int
    batch_size: int


SCALES: dict[str, DemoScale] = {
    "smollm2": DemoScale(
        description="135M-parameter instruct model (SmolLM2-135M-Instruct)",
        rg_test_size=40,
        tc_test_size=30,
        generate_limit=24,
        rg_steps=10,
        tc_steps=12,
        rg_learning_rate=1e-3,
        tc_learning_rate=3e-3,
        tc_sequence_len=2048,
        generate_tokens=96,
        judge_tokens=128,
        batch_size=8,
    ),
    "tiny": DemoScale(
        description="tiny random Mixtral (2 layers, 4 experts; random weights)",
        rg_test_size=40,
        tc_test_size=30,
        generate_limit=24,
        rg_steps=6,
        tc_steps=6,
        rg_learning_rate=1e-3,
        tc_learning_rate=3e-3,
        tc_sequence_len=2048,
        generate_tokens=48,
        judge_tokens=64,
        batch_size=8,
    ),
}


@dataclass
class DemoOptions:
    model: str = "smollm2"
    out: Path = Path("out/demo")
    force: bool = False
    data_dir: Path = DEFAULT_DATA_DIR
    seed: int = 42
    log: Callable[[str], None] = print


@dataclass
class DemoResult:
    out: Path
    report: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0


class _State:
    """Which stages are finished, kept in ``OUT/demo_state.json`` (rewritten atomically)."""

    def __init__(self, out: Path, settings: dict[str, Any]):
        from mixtral_ft.util.hashing import sha256_json

        self.path = out / "demo_state.json"
        self.settings_sha = sha256_json(settings)
        self.data: dict[str, Any] = {"settings": settings, "settings_sha256": self.settings_sha, "stages": {}}
        if self.path.exists():
            old = json.loads(self.path.read_text(encoding="utf-8"))
            if old.get("settings_sha256") != self.settings_sha:
                raise UsageError(f"{out}: holds a demo run with other settings; use --force to start over")
            self.data = old

    def done(self, name: str) -> bool:
        return name in self.data["stages"]

    def finish(self, name: str, info: dict[str, Any]) -> None:
        from mixtral_ft.util.manifest import write_manifest

        self.data["stages"][name] = info
        write_manifest(self.path, self.data)


def _paths(out: Path) -> dict[str, Path]:
    return {
        "model": out / "model",
        "rg_data": out / "rg-data",
        "rg_run": out / "runs" / "rg",
        "gen_raw": out / "generations" / "raw.jsonl",
        "gen_ft": out / "generations" / "fine-tuned.jsonl",
        "tc_data": out / "tc-data",
        "tc_run": out / "runs" / "tc",
        "judge_raw": out / "judgements" / "raw.jsonl",
        "judge_ft": out / "judgements" / "fine-tuned.jsonl",
        "judge_tc_raw": out / "judgements" / "tc-test-raw-checker.jsonl",
        "judge_tc_ft": out / "judgements" / "tc-test-fine-tuned-checker.jsonl",
        "eval": out / "eval",
        "report": out / "report",
    }


def base_model_dir(model: str, out: Path) -> Path:
    """The local base model: SmolLM2 converted once into the cache, or a tiny Mixtral built in ``out``."""
    if model == "smollm2":
        from mixtral_ft.models.smollm2 import smollm2_dir

        return smollm2_dir()
    from mixtral_ft.models.tiny import build_tiny_mixtral, default_corpus

    return build_tiny_mixtral(out, sample_path=default_corpus(), force=True)


def run_demo(opts: DemoOptions) -> DemoResult:
    """Run (or continue) the demo; return where everything is."""
    if opts.model not in SCALES:
        raise UsageError(suggest(opts.model, SCALES, "demo model"))
    scale = SCALES[opts.model]
    qa = opts.data_dir / "sample_qa.jsonl"
    responses = opts.data_dir / "sample_tc_responses.jsonl"
    for path in (qa, responses):
        if not path.exists():
            raise UsageError(f"{path}: bundled demo data not found (run from a mixft checkout)")
    out = Path(opts.out)
    from mixtral_ft.util.atomic import guard_destination

    guard_destination(out, [opts.data_dir])  # --force never removes the working directory or the data
    if opts.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": opts.model, "scale": asdict(scale), "seed": opts.seed, "data_dir": str(opts.data_dir)}
    state = _State(out, settings)
    p = _paths(out)
    result = DemoResult(out=out, report=p["report"] / "report.md")
    started = time.monotonic()
    run_stages(_stages(opts, scale, qa, responses, p), state, opts.log)
    result.stages = state.data["stages"]
    result.wall_s = time.monotonic() - started
    return result


def run_stages(
    stages: list[tuple[str, str, Callable[[], dict | None]]], state: _State, log: Callable[[str], None]
) -> None:
    """Run the stages not finished yet, in order; the first failure stops everything with its message."""
    for i, (name, title, fn) in enumerate(stages, 1):
        if state.done(name):
            log(f"[{i}/{len(stages)}] {title}: done earlier, skipped")
            continue
        log(f"[{i}/{len(stages)}] {title}")
        t0 = time.monotonic()
        try:
            info = fn() or {}
        except MixftError as e:
            raise _stage_error(f"demo stage {i}/{len(stages)} '{name}' ({title}) failed: {e}", e) from e
        info["wall_s"] = round(time.monotonic() - t0, 1)
        state.finish(name, info)
        log(f"        {_brief(info)}")


def _brief(info: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in info.items() if not isinstance(v, (dict, list)))


def _stages(opts: DemoOptions, scale: DemoScale, qa: Path, responses: Path, p: dict[str, Path]):
    """The pipeline as (name, title, function) triples, in order."""
    from mixtral_ft.backends.base import GenerationParams
    from mixtral_ft.backends.options import BackendOptions

    def model() -> Path:
        if opts.model == "smollm2":
            from mixtral_ft.models.smollm2 import smollm2_dir

            return smollm2_dir()  # converted once, then reused from the cache
        return p["model"]  # built by the first stage

    def base_model() -> dict:
        return {"base_model": str(base_model_dir(opts.model, p["model"]))}

    def prepare_rg() -> dict:
        from mixtral_ft.prepare.options import PrepareOptions
        from mixtral_ft.prepare.pipeline import run_prepare
        from mixtral_ft.prepare.readers import InputSpec
        from mixtral_ft.prepare.rg import RgTask
        from mixtral_ft.prepare.split import TestSize

        res = run_prepare(
            PrepareOptions(
                inputs=[InputSpec(path=qa, format="jsonl")],
                out=p["rg_data"],
                group_by="article_id",
                test_size=TestSize(count=scale.rg_test_size),
                seed=opts.seed,
                force=True,
                tokenizer=model(),
                sequence_len=1024,
            ),
            RgTask(),
        )
        return {"train": res.counts.get("train"), "test": res.counts.get("test")}

    def train(task: str, data: Path, run_dir: Path, steps: int, lr: float, extra: tuple[str, ...] = ()) -> dict:
        from mixtral_ft.train.api import TrainRequest, run

        if run_dir.exists():  # an interrupted earlier attempt: start this stage again
            shutil.rmtree(run_dir)
        res = run(
            TrainRequest(
                task=task,
                data_dir=data,
                profile="cpu",
                run_dir=run_dir,
                base_model=str(model()),
                overrides=(
                    f"max_steps={steps}",
                    f"learning_rate={lr}",
                    f"seed={opts.seed}",
                    f"eval_steps={steps}",
                    f"save_steps={steps}",
                    *extra,
                ),
            )
        )
        s = res.summary
        return {
            "steps": s.global_step,
            "train_loss": s.train_loss,
            "eval_loss": s.eval_loss,
            "adapter": str(run_dir / "output"),
        }

    def generate(out: Path, adapter: Path | None, prompt: str) -> dict:
        from mixtral_ft.generate.run import GenerateConfig
        from mixtral_ft.generate.run import generate as run

        s = run(
            GenerateConfig(
                data=p["rg_data"] / "test.jsonl",
                out=out,
                prompt_style=prompt,
                backend=BackendOptions(
                    "hf", model=str(model()), adapter=str(adapter) if adapter else None, batch_size=scale.batch_size
                ),
                params=GenerationParams(max_new_tokens=scale.generate_tokens, seed=opts.seed),
                limit=scale.generate_limit,
            )
        )
        return {"rows": s.total, "failed": s.failed, "tokens_per_s": round(s.tokens_per_s, 1)}

    def prepare_tc() -> dict:
        from mixtral_ft.prepare.options import PrepareOptions
        from mixtral_ft.prepare.pipeline import run_prepare
        from mixtral_ft.prepare.split import TestSize
        from mixtral_ft.prepare.tc import TcTask, parse_inputs

        res = run_prepare(
            PrepareOptions(
                inputs=parse_inputs([str(responses)]),
                out=p["tc_data"],
                group_by="group",
                test_size=TestSize(count=scale.tc_test_size),
                seed=opts.seed,
                force=True,
                tokenizer=model(),
                sequence_len=scale.tc_sequence_len,
            ),
            TcTask(),
        )
        return {k: res.summary[k] for k in ("train", "test", "hallucinated")}

    def judge(responses_file: Path, out: Path, adapter: Path | None) -> dict:
        from mixtral_ft.tc.judge import JudgeConfig
        from mixtral_ft.tc.judge import judge as run

        s = run(
            JudgeConfig(
                responses=responses_file,
                out=out,
                backend=BackendOptions(
                    "hf", model=str(model()), adapter=str(adapter) if adapter else None, batch_size=scale.batch_size
                ),
                params=GenerationParams(max_new_tokens=scale.judge_tokens, seed=opts.seed),
            )
        )
        return {"judged": s.judged, "parse_failures": s.parse_failures, "hallucinated": s.hallucinated}

    tc_adapter = p["tc_run"] / "output"
    rg_adapter = p["rg_run"] / "output"
    raw_prompt = "chat" if opts.model == "smollm2" else "rg"
    return [
        ("model", f"base model: {scale.description}", base_model),
        ("prepare_rg", "prepare rg: bundled Q&A -> train/test (split by article)", prepare_rg),
        (
            "train_rg",
            f"train rg: LoRA, profile cpu, {scale.rg_steps} steps",
            lambda: train("rg", p["rg_data"], p["rg_run"], scale.rg_steps, scale.rg_learning_rate),
        ),
        (
            "generate_raw",
            f"generate: raw model ({raw_prompt} prompt) on {scale.generate_limit} test questions",
            lambda: generate(p["gen_raw"], None, raw_prompt),
        ),
        (
            "generate_ft",
            f"generate: fine-tuned adapter on the same {scale.generate_limit} questions",
            lambda: generate(p["gen_ft"], rg_adapter, "rg"),
        ),
        ("prepare_tc", "prepare tc: bundled labeled responses -> train/test (split by article)", prepare_tc),
        (
            "train_tc",
            f"train tc: LoRA, profile cpu, {scale.tc_steps} steps",
            # No eval-loss pass for TC (Axolotl evaluates at the first and last step, which on a CPU costs
            # more than the training): `eval tc` below measures the checker on the same test split.
            lambda: train(
                "tc",
                p["tc_data"],
                p["tc_run"],
                scale.tc_steps,
                scale.tc_learning_rate,
                (f"sequence_len={scale.tc_sequence_len}", "test_datasets=null"),
            ),
        ),
        (
            "judge_tc_raw",
            "judge: TC test split with the raw model as checker",
            lambda: judge(p["tc_data"] / "test.jsonl", p["judge_tc_raw"], None),
        ),
        (
            "judge_tc_ft",
            "judge: TC test split with the trained checker",
            lambda: judge(p["tc_data"] / "test.jsonl", p["judge_tc_ft"], tc_adapter),
        ),
        (
            "judge_raw",
            "judge: raw model's answers with the trained checker",
            lambda: judge(p["gen_raw"], p["judge_raw"], tc_adapter),
        ),
        (
            "judge_ft",
            "judge: fine-tuned model's answers with the trained checker",
            lambda: judge(p["gen_ft"], p["judge_ft"], tc_adapter),
        ),
        ("eval", "eval rg, eval tc, eval pipeline, eval compare", lambda: _evaluate(p)),
        ("report", "report: Markdown + HTML with plots", lambda: _report(opts, scale, p)),
    ]


EVALS = ("tc-raw-checker", "tc-fine-tuned-checker", "pipeline", "rg-raw", "rg-fine-tuned", "compare-rg", "compare-tc")


def _evaluate(p: dict[str, Path]) -> dict:
    """Every eval the report needs, each written to ``eval/NAME``; any failure fails the stage.

    The checker evals come first: the RG rates and their comparison are corrected with the
    trained checker's error measured on the TC test split (the same judge: model, adapter, prompt).
    An eval with nothing to measure (no parsed verdict) is a result with undefined values and the
    reason, not a failure."""
    from mixtral_ft.eval.compare import evaluate_compare
    from mixtral_ft.eval.correction import CheckerEval
    from mixtral_ft.eval.items import load_items
    from mixtral_ft.eval.pipeline import evaluate_pipeline
    from mixtral_ft.eval.result import write_result
    from mixtral_ft.eval.rg import evaluate_rg
    from mixtral_ft.eval.tc import evaluate_tc

    gold = load_items(p["tc_data"] / "test.jsonl", role="gold")
    raw_checker = load_items(p["judge_tc_raw"], role="predictions")
    ft_checker = load_items(p["judge_tc_ft"], role="predictions")
    raw_answers = load_items(p["judge_raw"], role="verdicts")
    ft_answers = load_items(p["judge_ft"], role="verdicts")
    checker_dir = p["eval"] / "tc-fine-tuned-checker"
    jobs: dict[str, Callable[[], Any]] = {
        "tc-raw-checker": lambda: evaluate_tc(raw_checker, gold, label="raw checker"),
        "tc-fine-tuned-checker": lambda: evaluate_tc(ft_checker, gold, label="fine-tuned checker"),
        "pipeline": lambda: evaluate_pipeline(gold, ft_checker, label="fine-tuned checker"),
        "rg-raw": lambda: evaluate_rg(raw_answers, label="raw model", checker=CheckerEval.load(checker_dir)),
        "rg-fine-tuned": lambda: evaluate_rg(
            ft_answers, label="fine-tuned model", checker=CheckerEval.load(checker_dir)
        ),
        "compare-rg": lambda: evaluate_compare(
            raw_answers,
            ft_answers,
            label="raw vs fine-tuned model",
            names=("raw model", "fine-tuned model"),
            checker=CheckerEval.load(checker_dir),
        ),
        "compare-tc": lambda: evaluate_compare(
            raw_checker,
            ft_checker,
            gold=gold,
            label="raw vs fine-tuned checker",
            names=("raw checker", "fine-tuned checker"),
        ),
    }
    for name in EVALS:
        try:
            result = jobs[name]()
        except MixftError as e:
            raise _stage_error(f"eval {name}: {e}", e) from e
        write_result(result, p["eval"] / name, force=True)
    return {"written": list(EVALS)}


def _report(opts: DemoOptions, scale: DemoScale, p: dict[str, Path]) -> dict:
    from mixtral_ft.report.build import build_report

    # The models' rows first in the summary, then the checkers'.
    order = (
        "rg-raw",
        "rg-fine-tuned",
        "tc-raw-checker",
        "tc-fine-tuned-checker",
        "pipeline",
        "compare-rg",
        "compare-tc",
    )
    inputs = [p["rg_run"], p["tc_run"]] + [p["eval"] / name for name in order]
    data = build_report(inputs, p["report"], force=True, note=QUALITY_NOTE.format(model=scale.description))
    return {"report": str(p["report"] / "report.md"), "files": len(data.get("files", []))}


def env_for_cpu_demo() -> None:
    """The CPU profile's environment: offline, no telemetry (set before transformers is imported)."""
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)
