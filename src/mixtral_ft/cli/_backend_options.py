"""The option group every inference command shares: model, backend and decoding flags.

``@inference_options(max_new_tokens=...)`` adds the same flags, with the same names and help,
to a command and hands them to it as two typed objects: ``backend: BackendOptions`` and
``params: GenerationParams`` (keyword-only parameters of the command). A command's own
signature lists only what is its own (input, output, prompt flags). ``--help`` shows the group
in two panels, "Model and backend" and "Decoding". ``mixft generate`` and ``mixft judge`` use it.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, Optional

import typer

# (parameter name, type, typer option): the order is the order in --help.
BACKEND_FLAGS: list[tuple[str, Any, Any]] = [
    ("model", str, typer.Option(..., "--model", "-m", help="hf: base or merged model directory. openai: the served model name.", rich_help_panel="Model and backend")),
    ("adapter", Optional[str], typer.Option(None, "--adapter", help="hf only: a PEFT/LoRA adapter directory (e.g. a `mixft train` output).", rich_help_panel="Model and backend")),
    ("backend", str, typer.Option("hf", "--backend", help="hf (transformers in this process) or openai (an OpenAI-compatible endpoint).", rich_help_panel="Model and backend")),
    ("batch_size", int, typer.Option(8, "--batch-size", help="hf: prompts generated together (left-padded).", rich_help_panel="Model and backend")),
    ("load_in_4bit", bool, typer.Option(False, "--load-in-4bit", help="hf: load the model in 4-bit NF4 (CUDA GPU only).", rich_help_panel="Model and backend")),
    ("base_url", Optional[str], typer.Option(None, "--base-url", help="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1.", rich_help_panel="Model and backend")),
    ("endpoint_mode", str, typer.Option("completions", "--endpoint-mode", help="openai: completions (raw prompt, as trained) or chat.", rich_help_panel="Model and backend")),
    ("api_key_env", str, typer.Option("OPENAI_API_KEY", "--api-key-env", help="openai: environment variable holding the API key (never written anywhere).", rich_help_panel="Model and backend")),
    ("concurrency", int, typer.Option(8, "--concurrency", help="openai: requests in flight at once.", rich_help_panel="Model and backend")),
    ("timeout", float, typer.Option(120.0, "--timeout", help="openai: seconds per request before it counts as failed (and is retried).", rich_help_panel="Model and backend")),
    ("max_retries", int, typer.Option(4, "--max-retries", help="openai: retries per item on 429/5xx/timeouts/connection errors.", rich_help_panel="Model and backend")),
    ("max_requests", Optional[int], typer.Option(None, "--max-requests", help="openai: cap on HTTP requests in this run, retries included.", rich_help_panel="Model and backend")),
]
DECODING_FLAGS: list[tuple[str, Any, Any]] = [
    ("temperature", float, typer.Option(0.0, "--temperature", help="0 = greedy (default); > 0 samples.", rich_help_panel="Decoding")),
    ("top_p", float, typer.Option(1.0, "--top-p", help="Nucleus sampling mass (with --temperature > 0).", rich_help_panel="Decoding")),
    ("seed", int, typer.Option(42, "--seed", help="Seed for sampling (recorded).", rich_help_panel="Decoding")),
    ("stop", Optional[list[str]], typer.Option(None, "--stop", help="Stop string (repeatable); generation also stops at EOS.", rich_help_panel="Decoding")),
]

# Job flags with one meaning in every inference command.
LimitOption = typer.Option(None, "--limit", help="Only the first N input rows.")
ResumeForceOption = typer.Option(False, "--force", help="Discard an existing output file instead of resuming it.")


def inference_options(max_new_tokens: int, what: str = "response") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command that takes ``backend: BackendOptions`` and ``params: GenerationParams``.

    ``max_new_tokens`` is the command's default for ``--max-new-tokens`` (``what`` names the unit
    in its help). The flags are added after the command's own, so ``--help`` lists its own first.
    """

    flags = BACKEND_FLAGS + [("max_new_tokens", int, typer.Option(
        max_new_tokens, "--max-new-tokens", rich_help_panel="Decoding", help=f"Most tokens generated per {what}."))]
    flags += DECODING_FLAGS
    names = [name for name, _, _ in flags]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(command)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.name not in ("backend", "params")]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for name, kind, option in flags]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            from mixtral_ft.backends.base import GenerationParams
            from mixtral_ft.backends.options import BackendOptions

            v = {name: kwargs.pop(name) for name in names}
            params = GenerationParams(max_new_tokens=v["max_new_tokens"], temperature=v["temperature"],
                                      top_p=v["top_p"], seed=v["seed"], stop=tuple(v["stop"] or ()))
            backend = BackendOptions(
                name=v["backend"], model=v["model"], adapter=v["adapter"], batch_size=v["batch_size"],
                load_in_4bit=v["load_in_4bit"], base_url=v["base_url"], endpoint_mode=v["endpoint_mode"],
                api_key_env=v["api_key_env"], concurrency=v["concurrency"], timeout=v["timeout"],
                max_retries=v["max_retries"], max_requests=v["max_requests"],
            )
            return command(**kwargs, backend=backend, params=params)

        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper

    return decorate
