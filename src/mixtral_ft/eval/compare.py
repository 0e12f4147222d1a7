"""`eval compare A B`: the same items under two systems, with a paired test.

Outcome "hallucinated" (two verdict files; items unparsed in either are left out and counted) or,
with ``gold``, "judged correctly" (two checkers; unparsed counts as wrong). Difference B - A with
Newcombe's paired interval and McNemar's test; with ``checker``, also corrected for the judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.eval.correction import CheckerEval, corrected_difference, corrected_rate
from mixtral_ft.eval.items import ItemFile, match_ids
from mixtral_ft.eval.metrics import Estimate, rate
from mixtral_ft.eval.render import correction_text, est_text, intervals_sentence, markdown_table, pct, signed_points
from mixtral_ft.eval.result import EvalResult
from mixtral_ft.eval.stats import DEFAULT_CONFIDENCE, McNemarResult, mcnemar, newcombe_paired_interval


def paired_outcomes(a: ItemFile, b: ItemFile, gold: ItemFile | None) -> tuple[list[str], list[bool], list[bool], int]:
    """(ids used, outcome in A, outcome in B, ids left out as unparsed)."""
    ids = match_ids(a, b, "A", "B")
    ia, ib = a.by_id(), b.by_id()
    if gold is not None:
        match_ids(a, gold, "A", "gold")
        ig = gold.by_id()
        out_a = [ia[i].hallucinated is not None and ia[i].hallucinated == ig[i].hallucinated for i in ids]
        out_b = [ib[i].hallucinated is not None and ib[i].hallucinated == ig[i].hallucinated for i in ids]
        return ids, out_a, out_b, 0
    used = [i for i in ids if ia[i].parsed and ib[i].parsed]
    return (
        used,
        [bool(ia[i].hallucinated) for i in used],
        [bool(ib[i].hallucinated) for i in used],
        len(ids) - len(used),
    )


def evaluate_compare(
    a: ItemFile,
    b: ItemFile,
    gold: ItemFile | None = None,
    count_relevance: bool = False,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
    label: str | None = None,
    names: tuple[str, str] | None = None,
    checker: CheckerEval | None = None,
) -> EvalResult:
    if checker is not None:
        if gold is not None:
            raise UsageError(
                "--checker-eval corrects judged hallucination rates; with --gold the outcome is "
                "the checkers' accuracy against gold, which needs no correction"
            )
        checker.check_applies_to([a, b], count_relevance)
    ids, out_a, out_b, excluded = paired_outcomes(a, b, gold)
    name_a, name_b = names or (a.path.stem, b.path.stem)
    table = PairedTable.of(out_a, out_b)
    outcome = "accuracy" if gold is not None else "hallucination_rate"
    metrics, test = _metrics(table, outcome, checker, method, confidence)
    body: dict[str, Any] = {
        "outcome": outcome,
        "names": {"a": name_a, "b": name_b},
        "counts": {
            "items": table.n,
            "excluded_unparsed": excluded,
            "both": table.both,
            "a_only": table.a_only,
            "b_only": table.b_only,
            "neither": table.neither,
        },
        "metrics": {k: v.to_dict() for k, v in metrics.items()},
        "mcnemar": test.to_dict() if test else None,
    }
    if checker is not None:
        body["checker_eval"] = checker.to_dict(method, confidence)
    summary, rows = _value_rows(body, test)
    inputs = {"a": a, "b": b} | ({"gold": gold} if gold is not None else {})
    options = {"count_relevance": count_relevance, "interval": method, "confidence": confidence}
    if checker is not None:
        options["checker_eval"] = str(checker.path)
    md = _markdown(body, rows, checker)
    return EvalResult("compare", label or f"{name_a} vs {name_b}", inputs, options, body, summary, md)


@dataclass(frozen=True)
class PairedTable:
    """The paired 2x2 table of a positive outcome in A and in B."""

    both: int
    a_only: int
    b_only: int
    neither: int

    @classmethod
    def of(cls, out_a: list[bool], out_b: list[bool]) -> PairedTable:
        both = sum(x and y for x, y in zip(out_a, out_b))
        a_only = sum(x and not y for x, y in zip(out_a, out_b))
        b_only = sum(y and not x for x, y in zip(out_a, out_b))
        return cls(both, a_only, b_only, len(out_a) - both - a_only - b_only)

    @property
    def n(self) -> int:
        return self.both + self.a_only + self.b_only + self.neither


NOTHING = "no item is parsed in both files"


def _metrics(
    t: PairedTable, outcome: str, checker: CheckerEval | None, method: str, confidence: float
) -> tuple[dict[str, Estimate], McNemarResult | None]:
    """Both rates, the difference B - A with Newcombe's paired interval, McNemar's test; with
    ``checker``, the rates and the difference corrected for the judge's error."""
    n = t.n
    ra = rate(t.both + t.a_only, n, method, confidence, NOTHING)
    rb = rate(t.both + t.b_only, n, method, confidence, NOTHING)
    if n:
        # Newcombe's interval is for p_first - p_second; put B first so the difference is B - A.
        interval = newcombe_paired_interval(t.both, t.b_only, t.a_only, t.neither, confidence)
        diff, test = Estimate((t.b_only - t.a_only) / n, interval), mcnemar(t.a_only, t.b_only)
    else:
        diff, test = Estimate(None, None, note=f"undefined: {NOTHING}"), None
    metrics = {f"{outcome}_a": ra, f"{outcome}_b": rb, "difference_b_minus_a": diff}
    if checker is not None:
        metrics["hallucination_rate_corrected_a"] = corrected_rate(
            t.both + t.a_only, n, checker, method, confidence, NOTHING
        )
        metrics["hallucination_rate_corrected_b"] = corrected_rate(
            t.both + t.b_only, n, checker, method, confidence, NOTHING
        )
        metrics["difference_b_minus_a_corrected"] = corrected_difference(
            t.both, t.a_only, t.b_only, t.neither, checker, method, confidence
        )
    return metrics, test


def _value_rows(body: dict, test: McNemarResult | None) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """The stdout summary and the rows of report.md's table of values."""
    m, outcome = body["metrics"], body["outcome"]
    name_a, name_b = body["names"]["a"], body["names"]["b"]
    word = "accuracy" if outcome == "accuracy" else "hallucination rate"
    diff_text = signed_points(m["difference_b_minus_a"])
    p_text = f"{test.p_exact:.4g}" if test else "n/a (nothing to test)"
    summary = [
        ("items (paired)", str(body["counts"]["items"])),
        (f"{word} A ({name_a})", est_text(m[f"{outcome}_a"])),
        (f"{word} B ({name_b})", est_text(m[f"{outcome}_b"])),
        ("difference B - A", diff_text),
        ("McNemar exact p", p_text),
        ("excluded (unparsed)", str(body["counts"]["excluded_unparsed"])),
    ]
    rows = [
        [f"{word} A ({name_a})", est_text(m[f"{outcome}_a"])],
        [f"{word} B ({name_b})", est_text(m[f"{outcome}_b"])],
        ["difference B - A", diff_text],
        ["McNemar exact p-value", p_text],
        ["McNemar chi-square (cc), p", f"{test.chi2:.3f}, {test.p_chi2:.4g}" if test else "n/a"],
    ]
    ce = body.get("checker_eval")
    if ce is not None:
        corrected = [
            (f"A ({name_a}) corrected for the judge", correction_text(m["hallucination_rate_corrected_a"], ce)),
            (f"B ({name_b}) corrected for the judge", correction_text(m["hallucination_rate_corrected_b"], ce)),
            ("difference B - A corrected for the judge", signed_points(m["difference_b_minus_a_corrected"])),
        ]
        summary += corrected
        rows += [list(r) for r in corrected]
    return summary, rows


def _markdown(body: dict, rows: list[list[str]], checker: CheckerEval | None) -> str:
    m, c = body["metrics"], body["counts"]
    gold = body["outcome"] == "accuracy"
    pos = "correct" if gold else "hallucinated"
    cond = (
        "Outcome: judged correctly against gold (unparsed predictions count as wrong)."
        if gold
        else "Outcome: hallucinated. Items unparsed in either file are left out of the paired analysis."
    )
    parts = [
        cond + " Difference B - A; McNemar's test on the discordant pairs (exact binomial p; "
        "continuity-corrected chi-square beside it). " + intervals_sentence(m.items()),
        "",
        markdown_table(["", "value [CI]"], rows),
    ]
    if checker is not None:
        parts += [
            "",
            "The corrected difference is (flag rate B - flag rate A) / (sensitivity + specificity - 1) of "
            f"the judge measured in `{checker.path}`; its interval combines Newcombe's paired interval of the "
            "flag-rate difference (the same items in A and B) with the interval of sensitivity + specificity "
            "- 1 (independent gold items). Assumption: " + body["checker_eval"]["assumption"] + ".",
        ]
    rate_a, rate_b = m[f"{body['outcome']}_a"]["value"], m[f"{body['outcome']}_b"]["value"]
    parts += [
        "",
        "## Paired table",
        "",
        markdown_table(
            ["", f"B {pos}", f"B not {pos}"],
            [[f"A {pos}", c["both"], c["a_only"]], [f"A not {pos}", c["b_only"], c["neither"]]],
        ),
        "",
        f"Items compared: {c['items']}; left out (unparsed in A or B): {c['excluded_unparsed']}; "
        f"A {pct(rate_a)} vs B {pct(rate_b)}.",
    ]
    return "\n".join(parts)
