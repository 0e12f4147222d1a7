"""PNG plots for the report (matplotlib, imported lazily with the non-interactive Agg backend).

matplotlib comes with the ``[plots]`` extra; without it the report is written without its plots
and says so (:func:`missing`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from mixtral_ft.errors import MissingDependencyError

MISSING = "plots not drawn: matplotlib is not installed (pip install 'mixtral-ft[plots]')"


def missing() -> str | None:
    """Why no plot can be drawn here, or None when matplotlib is importable."""
    return MISSING if importlib.util.find_spec("matplotlib") is None else None


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(MISSING) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_curves(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Label a figure of curves (grid, legend), write it to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def loss_curves(runs: list[tuple[str, list[tuple[int, float]], list[tuple[int, float]]]], path: Path) -> None:
    """Training (solid) and evaluation (dashed, dots) loss against step, one colour per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, (name, train, evals) in enumerate(runs):
        colour = f"C{i % 10}"
        if train:
            ax.plot([s for s, _ in train], [v for _, v in train], color=colour, label=f"{name}: train loss")
        if evals:
            ax.plot(
                [s for s, _ in evals],
                [v for _, v in evals],
                color=colour,
                linestyle="--",
                marker="o",
                markersize=4,
                label=f"{name}: eval loss",
            )
    _save_curves(plt, fig, ax, path, "step", "loss", "Training and evaluation loss")


def rates_with_errors(rows: list[tuple[str, float, float, float]], title: str, ylabel: str, path: Path) -> None:
    """Horizontal bars (value, 95% interval) in percent: rows are (name, value, low, high) as fractions."""
    plt = _pyplot()
    height = max(2.2, 0.55 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(7, height), dpi=120)
    names = [r[0] for r in rows]
    values = [100 * r[1] for r in rows]
    err = [[100 * (r[1] - r[2]) for r in rows], [100 * (r[3] - r[1]) for r in rows]]
    y = list(range(len(rows)))
    ax.barh(y, values, xerr=err, color="C0", alpha=0.75, capsize=4, ecolor="black")
    for yi, r in zip(y, rows):
        ax.text(
            100 * r[3] + 0.5, yi, f"{100 * r[1]:.1f}% [{100 * r[2]:.1f}, {100 * r[3]:.1f}]", va="center", fontsize=8
        )
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    top = max(100 * r[3] for r in rows)
    ax.set_xlim(0, min(100.0, top * 1.45 + 2) if top < 60 else 118)
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def risk_coverage_curve(curves: Sequence[tuple[str, list[dict], tuple[float, float] | None]], path: Path) -> None:
    """Net hallucination rate (over all responses and over accepted ones) against rejection rate;
    the checker's own operating point (its verdicts) as a star when given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for i, (name, rows, point) in enumerate(curves):
        colour = f"C{i % 10}"
        xs = [100 * r["rejection_rate"] for r in rows]
        ax.plot(
            xs,
            [100 * r["net_hallucination_rate_all"] for r in rows],
            color=colour,
            marker=".",
            label=f"{name}: hallucinated & accepted / all",
        )
        pts = [(100 * r["rejection_rate"], 100 * r["risk_accepted"]) for r in rows if r["risk_accepted"] is not None]
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color=colour,
            linestyle="--",
            label=f"{name}: hallucinated among accepted",
        )
        if point is not None:
            ax.plot(
                [100 * point[0]],
                [100 * point[1]],
                color=colour,
                marker="*",
                markersize=13,
                linestyle="none",
                label=f"{name}: operating point ({100 * point[0]:.1f}% rejected, {100 * point[1]:.1f}% net)",
            )
    _save_curves(
        plt,
        fig,
        ax,
        path,
        "rejection rate (%)",
        "net hallucination rate (%)",
        "Risk-coverage: rejecting by checker score",
    )
