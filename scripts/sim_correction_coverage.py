"""Coverage of the judge-corrected hallucination rate's 95% interval, by simulation.

Each simulated data set draws a true hallucination rate, a judge's true sensitivity and
specificity, a number of judged responses and a gold set (as `mixft eval tc` measures it), then
draws the three binomials mixft sees: the judge's flags on the responses, its hits on the gold
hallucinated items and its passes on the gold clean items. The interval mixft reports
(`eval.correction.corrected_rate`: Rogan-Gladen with the Lang-Reiczigel interval, "not
identifiable" when Youden's J is not clearly above 0) is checked against the true rate. The same
is done for the corrected paired difference of two systems (`corrected_difference`, MOVER-R).

    python scripts/sim_correction_coverage.py                  # 4,000 data sets each, seed 20241
    python scripts/sim_correction_coverage.py --datasets 20000 --seed 7
    python scripts/sim_correction_coverage.py --widths         # interval width against gold-set size

Realistic ranges (docs/evaluation.md): true rate 1-40% (log-uniform, so low rates such as the
reference report's 4.5% are well represented), sensitivity 0.60-0.98, specificity
0.70-0.99, 100-1,000 judged responses, a gold set of 100-600 items of which 20-50% hallucinated.
Pure Python (random, deterministic for a seed); the numbers are what docs/evaluation.md reports.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from mixtral_ft.eval.correction import CheckerEval, corrected_difference, corrected_rate

RANGES = {
    "rate": (0.01, 0.40),
    "sensitivity": (0.60, 0.98),
    "specificity": (0.70, 0.99),
    "responses": (100, 1000),
    "gold_items": (100, 600),
    "gold_hallucinated_share": (0.20, 0.50),
}


def _rate(rng: random.Random) -> float:
    low, high = RANGES["rate"]
    return low * (high / low) ** rng.random()  # log-uniform


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def _checker(rng: random.Random, se: float, sp: float) -> CheckerEval:
    """A judge's confusion matrix on a freshly drawn gold set (what `eval tc` would record)."""
    gold = rng.randint(*RANGES["gold_items"])
    pos = round(gold * rng.uniform(*RANGES["gold_hallucinated_share"]))
    neg = gold - pos
    tp, tn = _binomial(rng, pos, se), _binomial(rng, neg, sp)
    return CheckerEval(Path("simulated"), "", "simulated", None, None, False, tp, pos - tp, neg - tn, tn, 0, 0)


@dataclass
class Tally:
    datasets: int = 0
    identifiable: int = 0
    covered: int = 0
    width_sum: float = 0.0

    def add(self, truth: float, est) -> None:
        self.datasets += 1
        if est.value is None:
            return
        self.identifiable += 1
        self.covered += est.interval.low <= truth <= est.interval.high
        self.width_sum += est.interval.high - est.interval.low

    def summary(self) -> dict:
        return {
            "datasets": self.datasets,
            "identifiable": self.identifiable,
            "coverage": self.covered / self.identifiable if self.identifiable else None,
            "mean_width": self.width_sum / self.identifiable if self.identifiable else None,
        }


def simulate_rate(datasets: int, seed: int) -> dict:
    """Coverage of the corrected rate's interval, overall and by true-rate band."""
    rng = random.Random(seed)
    overall, bands = Tally(), {"<5%": Tally(), "5-15%": Tally(), ">=15%": Tally()}
    for _ in range(datasets):
        rate = _rate(rng)
        se, sp = rng.uniform(*RANGES["sensitivity"]), rng.uniform(*RANGES["specificity"])
        n = rng.randint(*RANGES["responses"])
        flagged = _binomial(rng, n, se * rate + (1 - sp) * (1 - rate))
        est = corrected_rate(flagged, n, _checker(rng, se, sp))
        overall.add(rate, est)
        bands["<5%" if rate < 0.05 else "5-15%" if rate < 0.15 else ">=15%"].add(rate, est)
    return {"overall": overall.summary(), "by_true_rate": {k: v.summary() for k, v in bands.items()}}


def simulate_difference(datasets: int, seed: int) -> dict:
    """Coverage of the corrected paired difference B - A: both systems answer the same items, their
    true hallucinations are correlated (B fixes some of A's and adds a few of its own)."""
    rng = random.Random(seed)
    tally = Tally()
    for _ in range(datasets):
        rate_a = _rate(rng)
        keep = rng.uniform(0.3, 1.0)  # share of A's hallucinations B repeats
        new = rng.uniform(0.0, 0.1)  # share of A's clean answers B gets wrong
        rate_b = rate_a * keep + (1 - rate_a) * new
        se, sp = rng.uniform(*RANGES["sensitivity"]), rng.uniform(*RANGES["specificity"])
        n = rng.randint(*RANGES["responses"])
        cells = [0, 0, 0, 0]  # flagged in both, A only, B only, neither
        for _ in range(n):
            a = rng.random() < rate_a
            b = rng.random() < (keep if a else new)
            fa = rng.random() < (se if a else 1 - sp)
            fb = rng.random() < (se if b else 1 - sp)
            cells[0 if fa and fb else 1 if fa else 2 if fb else 3] += 1
        tally.add(rate_b - rate_a, corrected_difference(*cells, _checker(rng, se, sp)))
    return {"overall": tally.summary()}


JUDGES = ((0.85, 0.95), (0.70, 0.90))


def widths(seed: int = 1, repeats: int = 400) -> list[dict]:
    """Mean 95% interval width of the corrected rate against the gold-set size, for 300 judged responses
    with a true rate of 5% and a gold set 30% hallucinated, for a good and a mediocre judge (the
    simulation is `mixtral_ft.label.size`, which `mixft label sample --target-width` also runs)."""
    from mixtral_ft.eval.stats import wilson_interval
    from mixtral_ft.label.size import corrected_width, floor_width

    rng = random.Random(seed)
    rows = []
    for se, sp in JUDGES:
        judge = {"sensitivity": se, "specificity": sp, "rate": 0.05, "responses": 300, "repeats": repeats}
        for gold in (50, 100, 200, 400, 800, 1600):
            width, unidentified = corrected_width(rng, gold=gold, positives=round(0.3 * gold), draw=_binomial, **judge)
            rows.append(
                {
                    "sensitivity": se,
                    "specificity": sp,
                    "gold_items": gold,
                    "mean_width": width,
                    "not_identifiable": unidentified,
                }
            )
        # An unlimited gold set (the judge's error known exactly): what the 300 responses alone allow.
        rows.append(
            {
                "sensitivity": se,
                "specificity": sp,
                "gold_items": "unlimited",
                "mean_width": floor_width(rng, draw=_binomial, **judge),
                "not_identifiable": 0.0,
            }
        )
    # The same 300 responses labelled without error: the floor no gold set can beat.
    w = wilson_interval(15, 300)
    rows.append(
        {
            "sensitivity": 1.0,
            "specificity": 1.0,
            "gold_items": "perfect judge",
            "mean_width": w.high - w.low,
            "not_identifiable": 0.0,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=20241)
    ap.add_argument("--widths", action="store_true", help="also print interval width against gold-set size")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args(argv)
    out = {
        "ranges": RANGES,
        "seed": args.seed,
        "rate": simulate_rate(args.datasets, args.seed),
        "difference": simulate_difference(args.datasets, args.seed + 1),
    }
    r, d = out["rate"]["overall"], out["difference"]["overall"]
    print(
        f"corrected rate: {r['coverage']:.1%} of {r['identifiable']} identifiable data sets covered by the "
        f"nominal 95% interval ({r['datasets'] - r['identifiable']} of {r['datasets']} not identifiable); "
        f"mean width {r['mean_width']:.3f}"
    )
    for band, t in out["rate"]["by_true_rate"].items():
        print(f"  true rate {band:>6}: {t['coverage']:.1%} of {t['identifiable']}, mean width {t['mean_width']:.3f}")
    print(
        f"corrected difference B - A: {d['coverage']:.1%} of {d['identifiable']} covered "
        f"({d['datasets'] - d['identifiable']} not identifiable); mean width {d['mean_width']:.3f}"
    )
    if args.widths:
        out["widths"] = widths(args.seed)
        print("interval width vs gold-set size (300 responses, true rate 5%, gold 30% hallucinated):")
        for row in out["widths"]:
            print(
                f"  Se {row['sensitivity']:.2f} Sp {row['specificity']:.2f}, gold {row['gold_items']!s:>13}: "
                f"mean width {100 * row['mean_width']:.1f} points, not identifiable {row['not_identifiable']:.1%}"
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
