"""`mixft report`: Markdown/HTML report with plots across runs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command("report")
    def report(
        run_dirs: list[Path] = typer.Argument(..., help="mixft eval --out dirs and/or training run dirs, any mix."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (created atomically)."),
        force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
    ) -> None:
        """Markdown + HTML report with plots: loss curves, hallucination rates, risk-coverage, summary table."""
        from mixtral_ft.cli._common import echo, info
        from mixtral_ft.eval.render import text_table
        from mixtral_ft.report.build import build_report

        data = build_report(run_dirs, out, force=force)
        rows = [("model", "hallucination rate", "TC accuracy", "net hallucination")]
        for r in data["summary"]:
            rows.append((r["model"],
                         _pct(r.get("hallucination_rate")), _pct(r.get("tc_accuracy")),
                         f"{_pct(r.get('net_hallucination_rate'))} at {_pct(r.get('rejection_rate'))} rejection"
                         if "net_hallucination_rate" in r else "—"))
        if len(rows) > 1:
            echo(text_table(rows))
        echo(f"report: {out / 'report.md'} ({len(data['evals'])} eval result(s), {len(data['runs'])} training run(s))")
        info(f"files: {', '.join(data['files'])}")


def _pct(est: dict | None) -> str:
    if not est or est.get("value") is None:
        return "—"
    return f"{100 * est['value']:.1f}%"
