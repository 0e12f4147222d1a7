"""`mixft demo`: the shipped CPU pipeline (pipelines/demo-cpu.yml) run by `mixft run`."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.choices import DemoModel  # the presets of demo-cpu.yml's `model` (a test checks)
from mixtral_ft.cli._common import enum_choice


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("demo")
    def demo(
        model: DemoModel = typer.Option(
            DemoModel.smollm2,
            "--model",
            click_type=enum_choice(DemoModel, "demo model"),
            help="smollm2: a real 135M instruct model; tiny: a random tiny Mixtral (faster, meaningless outputs).",
        ),
        out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Where every stage writes."),
        force: bool = typer.Option(False, "--force", help="Run every stage again instead of skipping finished ones."),
    ) -> None:
        """Run the whole pipeline on the bundled sample data, on a CPU, offline:
        prepare rg -> train rg -> generate -> prepare tc -> train tc -> judge -> eval -> report.
        The same as `mixft run demo-cpu --var model=MODEL --out OUT` (pipelines/demo-cpu.yml)."""
        from mixtral_ft.cli._common import echo, info
        from mixtral_ft.cli.run_cmd import MIXFT_COMMAND, check_argv
        from mixtral_ft.pipeline import DEMO_PIPELINE
        from mixtral_ft.pipeline.runner import RunRequest, run

        req = RunRequest(
            DEMO_PIPELINE,
            MIXFT_COMMAND,
            {"model": model.value},
            str(out),
            force=force,
            check_argv=check_argv,
            log=info,
            echo=echo,
        )
        result = run(req)
        report = result.pipeline.stage("report").output
        echo(f"demo finished in {result.wall_s / 60:.1f} min; everything is in {result.pipeline.out}/")
        echo(f"report: {report / 'report.md'} (also report.html beside it)")
