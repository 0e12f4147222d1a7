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
        note: str | None = typer.Option(
            None, "--note", help="A paragraph printed first (Markdown): what the numbers show."
        ),
    ) -> None:
        """Markdown + HTML report with plots: loss curves, hallucination rates, risk-coverage, summary table."""
        from mixtral_ft.cli._common import echo, info
        from mixtral_ft.eval.render import est_text, text_table
        from mixtral_ft.report.build import build_report

        def value(est: dict | None) -> str:
            return est_text({"value": est.get("value")}) if est and est.get("value") is not None else "—"

        def corrected(r: dict) -> str:
            if "hallucination_rate" not in r:
                return "—"
            if r.get("checker_eval") is None:
                return "not corrected"
            est = r.get("hallucination_rate_corrected") or {}
            return value(est) if est.get("value") is not None else str(est.get("note") or "n/a")

        data = build_report(run_dirs, out, force=force, note=note)
        rows = [("model", "hallucination rate", "corrected for the judge", "TC accuracy", "net hallucination")]
        for r in data["summary"]:
            rows.append(
                (
                    r["model"],
                    value(r.get("hallucination_rate")),
                    corrected(r),
                    value(r.get("tc_accuracy")),
                    f"{value(r.get('net_hallucination_rate'))} at {value(r.get('rejection_rate'))} rejection"
                    if "net_hallucination_rate" in r
                    else "—",
                )
            )
        if len(rows) > 1:
            echo(text_table(rows))
        echo(f"report: {out / 'report.md'} ({len(data['evals'])} eval result(s), {len(data['runs'])} training run(s))")
        info(f"files: {', '.join(data['files'])}")
