"""`mixft demo`: the whole pipeline on a CPU in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.choices import DemoModel
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
        force: bool = typer.Option(False, "--force", help="Start over instead of continuing an earlier demo run."),
    ) -> None:
        """Run the whole pipeline on the bundled sample data, on a CPU, offline:
        prepare rg -> train rg -> generate -> prepare tc -> train tc -> judge -> eval -> report."""
        from mixtral_ft.cli._common import echo, info
        from mixtral_ft.demo import DemoOptions, env_for_cpu_demo, run_demo

        env_for_cpu_demo()
        result = run_demo(DemoOptions(model=model.value, out=out, force=force, log=info))
        echo(f"demo finished in {result.wall_s / 60:.1f} min; everything is in {result.out}/")
        echo(f"report: {result.report} (also report.html beside it)")
