"""`mixft judge`: Truth-check responses with a TC model and write verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixtral_ft.cli.generate_cmd import (
    AdapterOption,
    ApiKeyEnvOption,
    BackendOption,
    BaseUrlOption,
    BatchSizeOption,
    ConcurrencyOption,
    EndpointModeOption,
    ForceOption,
    LimitOption,
    LoadIn4bitOption,
    MaxRequestsOption,
    MaxRetriesOption,
    ModelOption,
    SeedOption,
    StopOption,
    TemperatureOption,
    TimeoutOption,
    TopPOption,
    backend_options,
)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("judge")
    def judge_command(
        responses: Path = typer.Option(..., "--responses", help="Responses to check (JSONL, docs/formats.md §3; a generations file works)."),
        out: Path = typer.Option(..., "--out", "-o", help="Judgements file (JSONL, docs/formats.md §6); an existing one is resumed."),
        model: str = ModelOption,
        adapter: Optional[str] = AdapterOption,
        backend: str = BackendOption,
        prompt: str = typer.Option("tc", "--prompt", help="tc (the training prompt) or chat (the same prompt as one chat turn, for raw instruct models)."),
        template: Optional[Path] = typer.Option(None, "--template", help="TC prompt template (default: the shipped tc_v1)."),
        count_relevance: bool = typer.Option(False, "--count-relevance", help="Count relevance mistakes as hallucinations too."),
        no_score: bool = typer.Option(False, "--no-score", help="hf: skip the groundedness probability (score)."),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", help="Most tokens generated per verdict."),
        temperature: float = TemperatureOption,
        top_p: float = TopPOption,
        seed: int = SeedOption,
        stop: Optional[list[str]] = StopOption,
        batch_size: int = BatchSizeOption,
        load_in_4bit: bool = LoadIn4bitOption,
        base_url: Optional[str] = BaseUrlOption,
        endpoint_mode: str = EndpointModeOption,
        api_key_env: str = ApiKeyEnvOption,
        concurrency: int = ConcurrencyOption,
        timeout: float = TimeoutOption,
        max_retries: int = MaxRetriesOption,
        max_requests: Optional[int] = MaxRequestsOption,
        limit: Optional[int] = LimitOption,
        force: bool = ForceOption,
    ) -> None:
        """Truth-check each response with the TC model (resumable; one judgement per id)."""
        from mixtral_ft.backends.base import GenerationParams
        from mixtral_ft.cli._common import echo, existing_file, info
        from mixtral_ft.errors import MixftError
        from mixtral_ft.tc.judge import JudgeConfig, judge

        existing_file(responses, "--responses file")
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                  stop=tuple(stop or ()))
        opts = backend_options(backend, base_url, endpoint_mode, api_key_env, concurrency, timeout, max_retries,
                               max_requests, batch_size, load_in_4bit)
        cfg = JudgeConfig(responses=responses, out=out, backend=backend, model=model, adapter=adapter,
                          prompt_style=prompt, template=template, count_relevance=count_relevance, params=params,
                          backend_options=opts, limit=limit, force=force, score=not no_score)
        s = judge(cfg)
        if s.skipped or s.retried:
            info(f"resumed: {s.skipped} of {s.total} ids were already judged" + (f", {s.retried} failed row(s) retried" if s.retried else ""))
        pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        echo(f"judged {s.judged} of {s.total} response(s) -> {s.out}: hallucinated {s.hallucinated}/{s.judged - s.parse_failures} "
             f"parsed ({pct(s.hallucinated_share)}), parse failures {s.parse_failures}/{s.judged} ({pct(s.parse_failure_share)}); "
             f"this run: {s.written} row(s), {s.failed} failed, {s.tokens_per_s:.1f} tokens/s")
        if s.failed:
            raise MixftError(f"{s.failed} item(s) failed (first: {s.first_error}); re-run the same command to retry them")
