"""`mixft generate`: Generate RG responses on a test split."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.backends.base import GenerationParams
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.choices import GeneratePrompt
from mixtral_ft.cli._backend_options import LimitOption, ResumeForceOption, inference_options, plan_preflight
from mixtral_ft.cli._common import enum_choice


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("generate")
    @inference_options(max_new_tokens=256, what="response")
    def generate_command(
        data: Path = typer.Option(
            ..., "--data", help="Prepared RG split (JSONL, docs/formats.md §1), e.g. prepared/test.jsonl."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Generations file (JSONL); an existing one is resumed."),
        prompt: GeneratePrompt = typer.Option(
            GeneratePrompt.rg,
            "--prompt",
            click_type=enum_choice(GeneratePrompt, "prompt"),
            help="rg (the training prompt, for fine-tuned models) or chat (chat template + instruction, for raw instruct models).",
        ),
        limit: int | None = LimitOption,
        force: bool = ResumeForceOption,
        *,
        backend: BackendOptions,
        params: GenerationParams,
    ) -> None:
        """Generate one response per test row with the RG model (resumable; rows per docs/formats.md §2)."""
        from mixtral_ft.cli._common import echo, existing_file, info
        from mixtral_ft.errors import MixftError
        from mixtral_ft.generate.run import GenerateConfig, generate

        existing_file(data, "--data file")
        cfg = GenerateConfig(
            data=data, out=out, backend=backend, prompt_style=prompt.value, params=params, limit=limit, force=force
        )
        s = generate(cfg, preflight=plan_preflight(backend, params, "generate"))
        if s.skipped or s.retried or s.changed:
            info(
                f"resumed: {s.skipped} of {s.total} rows were already done"
                + (f", {s.retried} failed row(s) retried" if s.retried else "")
                + (f", {s.changed} row(s) redone because their input changed" if s.changed else "")
            )
        if s.missing_prefix:
            info(f"note: {s.missing_prefix} response(s) did not start with 'Answer:' (kept whole; see answer_prefix)")
        echo(
            f"wrote {s.written} row(s) to {s.out} ({s.written - s.failed} ok, {s.failed} failed); "
            f"{s.new_tokens} new tokens in {s.wall_s:.1f}s = {s.tokens_per_s:.1f} tokens/s"
        )
        if s.failed:
            raise MixftError(
                f"{s.failed} item(s) failed (first: {s.first_error}); re-run the same command to retry them"
            )
