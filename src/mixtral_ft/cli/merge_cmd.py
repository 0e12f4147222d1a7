"""`mixft merge`: Merge a LoRA adapter into its base model for serving."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("merge")
    def merge_cmd(
        run_dir: Path = typer.Argument(..., help="A `mixft train` run directory."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Merged model directory (default RUN_DIR/merged)."),
        base_model: str | None = typer.Option(
            None, "--base-model", help="Full-precision base model directory (default: the run's base_model)."
        ),
        force: bool = typer.Option(False, "--force", help="Replace an existing merged model."),
    ) -> None:
        """Merge the run's LoRA adapter into its base model (base + LoRA delta, shard by shard, nothing quantized)."""
        from mixtral_ft.cli._common import echo
        from mixtral_ft.train.merge import merge

        result = merge(run_dir, out=out, force=force, base_model=base_model)
        echo(
            f"merged model: {result.merged_dir}  ({result.merged_tensors} of {result.total_tensors} tensors "
            f"changed, {result.wall_s:.0f} s)"
        )
