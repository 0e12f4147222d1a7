"""`mixft generate`: Generate RG responses on a test split.

The backend options defined here are shared with `mixft judge` (same names, same help).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

BackendOption = typer.Option("hf", "--backend", help="hf (transformers in this process) or openai (an OpenAI-compatible endpoint).")
ModelOption = typer.Option(..., "--model", "-m", help="hf: base or merged model directory. openai: the served model name.")
AdapterOption = typer.Option(None, "--adapter", help="hf only: a PEFT/LoRA adapter directory (e.g. a `mixft train` output).")
BaseUrlOption = typer.Option(None, "--base-url", help="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1.")
EndpointModeOption = typer.Option("completions", "--endpoint-mode", help="openai: completions (raw prompt, as trained) or chat.")
ApiKeyEnvOption = typer.Option("OPENAI_API_KEY", "--api-key-env", help="openai: environment variable holding the API key (never written anywhere).")
ConcurrencyOption = typer.Option(8, "--concurrency", help="openai: requests in flight at once.")
TimeoutOption = typer.Option(120.0, "--timeout", help="openai: seconds per request before it counts as failed (and is retried).")
MaxRetriesOption = typer.Option(4, "--max-retries", help="openai: retries per item on 429/5xx/timeouts/connection errors.")
MaxRequestsOption = typer.Option(None, "--max-requests", help="openai: cap on HTTP requests in this run, retries included.")
BatchSizeOption = typer.Option(8, "--batch-size", help="hf: prompts generated together (left-padded).")
LoadIn4bitOption = typer.Option(False, "--load-in-4bit", help="hf: store the linears and the MoE experts in 4-bit NF4 (bitsandbytes; CUDA, or its CPU backend).")
TemperatureOption = typer.Option(0.0, "--temperature", help="0 = greedy (default); > 0 samples.")
TopPOption = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (with --temperature > 0).")
SeedOption = typer.Option(42, "--seed", help="Seed for sampling (recorded).")
StopOption = typer.Option(None, "--stop", help="Stop string (repeatable); generation also stops at EOS.")
LimitOption = typer.Option(None, "--limit", help="Only the first N input rows.")
ForceOption = typer.Option(False, "--force", help="Discard an existing output file instead of resuming it.")


def backend_options(backend: str, base_url, endpoint_mode, api_key_env, concurrency, timeout, max_retries,
                    max_requests, batch_size, load_in_4bit) -> dict:
    """The constructor options of the chosen backend (the CLI's flags for the other are refused)."""
    from mixtral_ft.errors import UsageError

    if backend == "openai":
        if not base_url:
            raise UsageError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if load_in_4bit:
            raise UsageError("--load-in-4bit is for the hf backend; quantize on the server instead")
        return {"base_url": base_url, "mode": endpoint_mode, "api_key_env": api_key_env, "concurrency": concurrency,
                "timeout": timeout, "max_retries": max_retries, "max_requests": max_requests}
    if backend == "hf":
        if base_url:
            raise UsageError("--base-url is for the openai backend")
        return {"batch_size": batch_size, "load_in_4bit": load_in_4bit}
    return {}


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("generate")
    def generate_command(
        data: Path = typer.Option(..., "--data", help="Prepared RG split (JSONL, docs/formats.md §1), e.g. prepared/test.jsonl."),
        out: Path = typer.Option(..., "--out", "-o", help="Generations file (JSONL); an existing one is resumed."),
        model: str = ModelOption,
        adapter: Optional[str] = AdapterOption,
        backend: str = BackendOption,
        prompt: str = typer.Option("rg", "--prompt", help="rg (the training prompt, for fine-tuned models) or chat (chat template + instruction, for raw instruct models)."),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Most tokens generated per response."),
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
        """Generate one response per test row with the RG model (resumable; rows per docs/formats.md §2)."""
        from mixtral_ft.backends.base import GenerationParams
        from mixtral_ft.cli._common import echo, existing_file, info
        from mixtral_ft.errors import MixftError
        from mixtral_ft.generate.run import GenerateConfig, generate

        existing_file(data, "--data file")
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                  stop=tuple(stop or ()))
        opts = backend_options(backend, base_url, endpoint_mode, api_key_env, concurrency, timeout, max_retries,
                               max_requests, batch_size, load_in_4bit)
        cfg = GenerateConfig(data=data, out=out, backend=backend, model=model, adapter=adapter, prompt_style=prompt,
                             params=params, backend_options=opts, limit=limit, force=force)
        s = generate(cfg)
        if s.skipped or s.retried:
            info(f"resumed: {s.skipped} of {s.total} rows were already done" + (f", {s.retried} failed row(s) retried" if s.retried else ""))
        if s.missing_prefix:
            info(f"note: {s.missing_prefix} response(s) did not start with 'Answer:' (kept whole; see answer_prefix)")
        echo(f"wrote {s.written} row(s) to {s.out} ({s.written - s.failed} ok, {s.failed} failed); "
             f"{s.new_tokens} new tokens in {s.wall_s:.1f}s = {s.tokens_per_s:.1f} tokens/s")
        if s.failed:
            raise MixftError(f"{s.failed} item(s) failed (first: {s.first_error}); re-run the same command to retry them")
