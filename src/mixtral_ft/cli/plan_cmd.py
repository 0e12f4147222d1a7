"""`mixft plan`: peak GPU memory and wall time of a train, generate or judge run, before it runs."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.choices import GeneratePrompt, JudgePrompt
from mixtral_ft.cli._common import ProfileOption, enum_choice
from mixtral_ft.plan.gpus import GPUS  # stdlib only: --help stays light

app = typer.Typer(
    help="Peak GPU memory (with its parts) and hours of a run, before a GPU-hour is spent.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add the `plan` group to the root app."""
    root.add_typer(app, name="plan")


GpuOption = typer.Option(
    None,
    "--gpu",
    metavar="[" + "|".join(GPUS) + "]",  # the table itself (common aliases such as h100 work too)
    help="GPU from the planner's table (default: the profile's card, else a100-80gb).",
)
GpuMemoryOption = typer.Option(None, "--gpu-memory", help="Plan for a GPU with this much memory (GiB) instead.")
JsonOption = typer.Option(
    False, "--json", help="Print the plan as JSON (peak_gib, gpu_memory_gib, fits, parts, hours, ...)."
)


def _gpu(gpu: str | None, gpu_memory: float | None, default: str):
    from mixtral_ft.errors import UsageError
    from mixtral_ft.plan.gpus import custom_gpu, gpu_by_name

    if gpu and gpu_memory:
        raise UsageError("--gpu and --gpu-memory: give one")
    if gpu_memory:
        return custom_gpu(gpu_memory, gpu_by_name(gpu or default))
    return gpu_by_name(gpu or default)


def _print(plan, as_json: bool, lines) -> None:
    from mixtral_ft.cli._common import echo

    if as_json:
        import json

        echo(json.dumps(plan.to_dict(), indent=1, default=str))
    else:
        for line in lines(plan):
            echo(line)


def _plan_train(
    task: str,
    data: Path | None,
    profile: str,
    base_model: str | None,
    overrides: list[str],
    gpus: int,
    gpu: str | None,
    gpu_memory: float | None,
    as_json: bool,
) -> None:
    from mixtral_ft.axolotl_cfg.keys import snapshot_keys
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.cli._common import info
    from mixtral_ft.plan.gpus import gpu_for_profile
    from mixtral_ft.plan.report import training_lines
    from mixtral_ft.plan.training import plan_training

    if data is not None and not data.is_dir():
        from mixtral_ft.errors import UsageError

        raise UsageError(f"{data}: data directory not found; create it with `mixft prepare {task}`")
    # The same layers `mixft train` renders (base -> profile -> --base-model -> --set).
    rendered = render(
        RenderRequest(
            task=task,
            data_dir=data or Path("."),
            profile=profile,
            run_dir=Path("runs/plan"),
            base_model=base_model,
            overrides=tuple(overrides),
        ),
        keys=snapshot_keys(),
    )  # equal to Axolotl's schema (tested); importing Axolotl takes seconds
    the_gpu = _gpu(gpu, gpu_memory, gpu_for_profile(profile).name)
    if not as_json:
        info("planning (measurements are cached; a first plan for a model and settings takes ~1 minute on a CPU) ...")
    plan = plan_training(rendered, data, the_gpu, task=task, gpus=gpus)
    _print(plan, as_json, training_lines)


def _make_train(task: str):
    def command(
        data: Path | None = typer.Option(
            None,
            "--data",
            help=f"Directory with train.jsonl from `mixft prepare {task}` "
            "(its token counts give the hours; without it, memory only).",
        ),
        profile: str = ProfileOption,
        base_model: str | None = typer.Option(
            None, "--base-model", help="Base model id or local path (default: the config's)."
        ),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override an Axolotl key: --set key=value (YAML value, dotted keys)."
        ),
        gpus: int = typer.Option(
            1, "--gpus", min=1, help="Processes (GPUs); ZeRO shards gradients and optimizer state over them."
        ),
        gpu: str | None = GpuOption,
        gpu_memory: float | None = GpuMemoryOption,
        as_json: bool = JsonOption,
    ) -> None:
        _plan_train(task, data, profile, base_model, overrides, gpus, gpu, gpu_memory, as_json)

    command.__doc__ = (
        f"Plan `mixft train {task}`: peak GPU memory per device with its parts, fits or not, "
        "and hours for the configured epochs."
    )
    return command


app.command("rg")(_make_train("rg"))
app.command("tc")(_make_train("tc"))


def _plan_inference(
    kind: str,
    path: Path | None,
    model: str,
    adapter: str | None,
    load_in_4bit: bool,
    batch_size: int,
    max_new_tokens: int,
    prompt: str,
    template: Path | None,
    gpu: str | None,
    gpu_memory: float | None,
    as_json: bool,
) -> None:
    from mixtral_ft.cli._common import existing_file, info
    from mixtral_ft.plan.inference import plan_inference
    from mixtral_ft.plan.report import inference_lines

    lengths = None
    if path is not None:
        from mixtral_ft.plan.prompts import prompt_lengths

        existing_file(path, "input file")
        lengths, method = prompt_lengths(kind, path, model, adapter, prompt, template)
        if not as_json:
            info(f"{len(lengths):,} prompts, longest {max(lengths):,} tokens ({method})")
    plan = plan_inference(
        model,
        _gpu(gpu, gpu_memory, "a100-80gb"),
        adapter=adapter,
        load_in_4bit=load_in_4bit,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        prompt_lengths=lengths,
    )
    _print(plan, as_json, inference_lines)


@app.command("generate")
def generate_command(
    data: Path | None = typer.Option(None, "--data", help="The RG split `mixft generate` would read (prompt lengths)."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Base or merged model directory (or a Hub id with a known config)."
    ),
    adapter: str | None = typer.Option(None, "--adapter", help="A PEFT/LoRA adapter directory."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="4-bit NF4 weights, experts included."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts generated together."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Most tokens generated per response."),
    prompt: GeneratePrompt = typer.Option(
        GeneratePrompt.rg, "--prompt", click_type=enum_choice(GeneratePrompt, "prompt"), help="As for `mixft generate`."
    ),
    gpu: str | None = GpuOption,
    gpu_memory: float | None = GpuMemoryOption,
    as_json: bool = JsonOption,
) -> None:
    """Plan `mixft generate` (hf backend): weights, KV cache at the longest batch, logits; tokens/s."""
    _plan_inference(
        "generate",
        data,
        model,
        adapter,
        load_in_4bit,
        batch_size,
        max_new_tokens,
        prompt.value,
        None,
        gpu,
        gpu_memory,
        as_json,
    )


@app.command("judge")
def judge_command(
    responses: Path | None = typer.Option(
        None, "--responses", help="The responses `mixft judge` would read (prompt lengths)."
    ),
    model: str = typer.Option(
        ..., "--model", "-m", help="Base or merged model directory (or a Hub id with a known config)."
    ),
    adapter: str | None = typer.Option(None, "--adapter", help="A PEFT/LoRA adapter directory (the TC model)."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="4-bit NF4 weights, experts included."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts generated together."),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", help="Most tokens generated per verdict."),
    prompt: JudgePrompt = typer.Option(
        JudgePrompt.tc, "--prompt", click_type=enum_choice(JudgePrompt, "prompt"), help="As for `mixft judge`."
    ),
    template: Path | None = typer.Option(None, "--template", help="TC prompt template (default: the shipped tc_v1)."),
    gpu: str | None = GpuOption,
    gpu_memory: float | None = GpuMemoryOption,
    as_json: bool = JsonOption,
) -> None:
    """Plan `mixft judge` (hf backend): weights, KV cache at the longest batch, logits; tokens/s."""
    _plan_inference(
        "judge",
        responses,
        model,
        adapter,
        load_in_4bit,
        batch_size,
        max_new_tokens,
        prompt.value,
        template,
        gpu,
        gpu_memory,
        as_json,
    )
