"""The option group every inference command shares: model, backend and decoding flags.

``@inference_options(max_new_tokens=...)`` adds the same flags, with the same names and help,
to a command and hands them to it as two typed objects: ``backend: BackendOptions`` and
``params: GenerationParams`` (keyword-only parameters of the command). A command's own
signature lists only what is its own (input, output, prompt flags). ``--help`` shows the group
in two panels, "Model and backend" and "Decoding". ``mixft generate`` and ``mixft judge`` use it,
and hand the runner the memory plan's preflight (``plan_preflight``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from mixtral_ft.choices import Backend, EndpointMode
from mixtral_ft.cli._common import enum_choice

if TYPE_CHECKING:
    from mixtral_ft.backends.base import GenerationParams
    from mixtral_ft.backends.options import BackendOptions
    from mixtral_ft.infer.job import Preflight

BACKEND_PANEL = "Model and backend"
DECODING_PANEL = "Decoding"


def _flag(
    name: str, kind: Any, default: Any, *decls: str, help: str, panel: str = BACKEND_PANEL, click_type: Any = None
) -> tuple:
    return name, kind, typer.Option(default, *decls, help=help, rich_help_panel=panel, click_type=click_type)


# (parameter name, type, typer option), in the order --help lists them.
BACKEND_FLAGS: list[tuple[str, Any, Any]] = [
    _flag(
        "model", str, ..., "--model", "-m", help="hf: base or merged model directory. openai: the served model name."
    ),
    _flag(
        "adapter",
        str | None,
        None,
        "--adapter",
        help="hf only: a PEFT/LoRA adapter directory (e.g. a `mixft train` output).",
    ),
    _flag(
        "backend",
        Backend,
        Backend.hf,
        "--backend",
        help="hf (transformers in this process) or openai (an OpenAI-compatible endpoint).",
        click_type=enum_choice(Backend, "backend"),
    ),
    _flag("batch_size", int, 8, "--batch-size", help="hf: prompts generated together (left-padded)."),
    _flag(
        "load_in_4bit",
        bool,
        False,
        "--load-in-4bit",
        help="hf: store the linears and the MoE experts in 4-bit NF4 (bitsandbytes; CUDA, or its CPU backend).",
    ),
    _flag(
        "skip_plan_check",
        bool,
        False,
        "--skip-plan-check",
        help="hf: run even when the memory plan says the model, batch and prompts do not fit the GPU's free "
        "memory (docs/planning.md).",
    ),
    _flag("base_url", str | None, None, "--base-url", help="openai: endpoint base URL, e.g. http://127.0.0.1:8000/v1."),
    _flag(
        "endpoint_mode",
        EndpointMode,
        EndpointMode.completions,
        "--endpoint-mode",
        help="openai: completions (raw prompt, as trained) or chat.",
        click_type=enum_choice(EndpointMode, "endpoint mode"),
    ),
    _flag(
        "api_key_env",
        str,
        "OPENAI_API_KEY",
        "--api-key-env",
        help="openai: environment variable holding the API key (never written anywhere).",
    ),
    _flag("concurrency", int, 8, "--concurrency", help="openai: requests in flight at once."),
    _flag(
        "timeout",
        float,
        120.0,
        "--timeout",
        help="openai: seconds per request before it counts as failed (and is retried).",
    ),
    _flag(
        "max_retries", int, 4, "--max-retries", help="openai: retries per item on 429/5xx/timeouts/connection errors."
    ),
    _flag(
        "max_requests",
        int | None,
        None,
        "--max-requests",
        help="openai: cap on HTTP requests in this run, retries included.",
    ),
]
DECODING_FLAGS: list[tuple[str, Any, Any]] = [
    _flag("temperature", float, 0.0, "--temperature", help="0 = greedy (default); > 0 samples.", panel=DECODING_PANEL),
    _flag("top_p", float, 1.0, "--top-p", help="Nucleus sampling mass (with --temperature > 0).", panel=DECODING_PANEL),
    _flag("seed", int, 42, "--seed", help="Seed for sampling (recorded).", panel=DECODING_PANEL),
    _flag(
        "stop",
        list[str] | None,
        None,
        "--stop",
        help="Stop string (repeatable); generation also stops at EOS.",
        panel=DECODING_PANEL,
    ),
]

# Job flags with one meaning in every inference command.
LimitOption = typer.Option(None, "--limit", help="Only the first N input rows.")
ResumeForceOption = typer.Option(False, "--force", help="Discard an existing output file instead of resuming it.")


Command = Callable[..., Any]


def inference_options(max_new_tokens: int, what: str = "response") -> Callable[[Command], Command]:
    """Decorate a Typer command that takes ``backend: BackendOptions`` and ``params: GenerationParams``.

        ``max_new_tokens`` is the command's default for ``--max-new-tokens`` (``what`` names the unit
        in its help). The flags are added after the command's own, so ``--help`` lists its own first,
    then the two panels.
    """

    flags = [
        *BACKEND_FLAGS,
        _flag(
            "max_new_tokens",
            int,
            max_new_tokens,
            "--max-new-tokens",
            help=f"Most tokens generated per {what}.",
            panel=DECODING_PANEL,
        ),
        *DECODING_FLAGS,
    ]
    names = [name for name, _, _ in flags]

    def decorate(command: Command) -> Command:
        hints = typing.get_type_hints(command)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values()
            if p.name not in ("backend", "params")
        ]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
            for name, kind, option in flags
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            from mixtral_ft.backends.base import GenerationParams
            from mixtral_ft.backends.options import BackendOptions

            v = {name: kwargs.pop(name) for name in names}
            params = GenerationParams(
                max_new_tokens=v["max_new_tokens"],
                temperature=v["temperature"],
                top_p=v["top_p"],
                seed=v["seed"],
                stop=tuple(v["stop"] or ()),
            )
            backend = BackendOptions(
                name=Backend(v["backend"]).value,
                model=v["model"],
                adapter=v["adapter"],
                batch_size=v["batch_size"],
                load_in_4bit=v["load_in_4bit"],
                skip_plan_check=v["skip_plan_check"],
                base_url=v["base_url"],
                endpoint_mode=EndpointMode(v["endpoint_mode"]).value,
                api_key_env=v["api_key_env"],
                concurrency=v["concurrency"],
                timeout=v["timeout"],
                max_retries=v["max_retries"],
                max_requests=v["max_requests"],
            )
            return command(**kwargs, backend=backend, params=params)

        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper

    return decorate


def plan_preflight(backend: BackendOptions, params: GenerationParams, what: str) -> Preflight | None:
    """The memory plan's check that ``generate`` / ``judge`` hand to the inference runner: before the
    hf backend loads the model, plan the run for the rows left to do and refuse (exit 2) one the free
    GPU memory cannot hold (docs/planning.md, "Preflight"). None for the openai backend and under
    ``--skip-plan-check``; without CUDA the check plans nothing."""
    if backend.name != Backend.hf or backend.skip_plan_check:
        return None
    from mixtral_ft.plan.check import preflight_requests

    return functools.partial(preflight_requests, backend, max_new_tokens=params.max_new_tokens, what=what)
