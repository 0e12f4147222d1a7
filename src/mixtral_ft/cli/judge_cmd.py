"""`mixft judge`: Truth-check responses with a TC model and write verdicts."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.backends.base import GenerationParams
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.choices import JudgePrompt
from mixtral_ft.cli._backend_options import LimitOption, ResumeForceOption, inference_options, plan_preflight
from mixtral_ft.cli._common import enum_choice


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("judge")
    @inference_options(max_new_tokens=1024, what="verdict")
    def judge_command(
        responses: Path = typer.Option(
            ..., "--responses", help="Responses to check (JSONL, docs/formats.md §3; a generations file works)."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Judgements file (JSONL, docs/formats.md §6); an existing one is resumed."
        ),
        prompt: JudgePrompt = typer.Option(
            JudgePrompt.tc,
            "--prompt",
            click_type=enum_choice(JudgePrompt, "prompt"),
            help="tc (the training prompt) or chat (the same prompt as one chat turn, for raw instruct models).",
        ),
        template: Path | None = typer.Option(
            None, "--template", help="TC prompt template (default: the shipped tc_v1)."
        ),
        count_relevance: bool = typer.Option(
            False, "--count-relevance", help="Count relevance mistakes as hallucinations too."
        ),
        no_score: bool = typer.Option(False, "--no-score", help="hf: skip the groundedness probability (score)."),
        limit: int | None = LimitOption,
        force: bool = ResumeForceOption,
        *,
        backend: BackendOptions,
        params: GenerationParams,
    ) -> None:
        """Truth-check each response with the TC model (resumable; one judgement per id)."""
        from mixtral_ft.cli._common import echo, existing_file, info
        from mixtral_ft.errors import MixftError
        from mixtral_ft.tc.judge import JudgeConfig, judge
        from mixtral_ft.util.fmt import pct

        existing_file(responses, "--responses file")
        cfg = JudgeConfig(
            responses=responses,
            out=out,
            backend=backend,
            prompt_style=prompt.value,
            template=template,
            count_relevance=count_relevance,
            params=params,
            limit=limit,
            force=force,
            score=not no_score,
        )
        s = judge(cfg, preflight=plan_preflight(backend, params, "judge"))
        if s.skipped or s.retried or s.changed:
            info(
                f"resumed: {s.skipped} of {s.total} ids were already judged"
                + (f", {s.retried} failed row(s) retried" if s.retried else "")
                + (f", {s.changed} row(s) redone because their input changed" if s.changed else "")
            )
        if s.score_off:
            info(f"note: no score (groundedness probability) in any row: {s.score_off}")
        echo(
            f"judged {s.judged} of {s.total} response(s) -> {s.out}: hallucinated {s.hallucinated}/"
            f"{s.judged - s.parse_failures} parsed ({pct(s.hallucinated_share)}), parse failures "
            f"{s.parse_failures}/{s.judged} ({pct(s.parse_failure_share)}); "
            f"this run: {s.written} row(s), {s.failed} failed, {s.tokens_per_s:.1f} tokens/s"
        )
        if s.failed:
            raise MixftError(
                f"{s.failed} item(s) failed (first: {s.first_error}); re-run the same command to retry them"
            )
