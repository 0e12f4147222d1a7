"""`eval compare A B`: the same items under two systems, with a paired test.

Without ``gold`` the outcome is "hallucinated" (A and B are verdict files for two response
generators judged on the same ids); items unparsed in either file are left out of the paired
analysis and counted. With ``gold`` the outcome is "judged correctly" (A and B are two
checkers' predictions); an unparsed prediction counts as wrong, as in ``eval tc``.

Difference = rate(B) - rate(A), with Newcombe's paired interval and McNemar's test
(exact binomial p-value; the continuity-corrected chi-square beside it).
"""

from __future__ import annotations

from mixtral_ft.errors import UsageError
from mixtral_ft.eval.items import ItemFile, match_ids
from mixtral_ft.eval.metrics import rate
from mixtral_ft.eval.render import est_text, markdown_table, pct
from mixtral_ft.eval.result import EvalResult
from mixtral_ft.eval.stats import DEFAULT_CONFIDENCE, mcnemar, newcombe_paired_interval


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
    return used, [bool(ia[i].hallucinated) for i in used], [bool(ib[i].hallucinated) for i in used], len(ids) - len(used)


def evaluate_compare(
    a: ItemFile,
    b: ItemFile,
    gold: ItemFile | None = None,
    count_relevance: bool = False,
    method: str = "wilson",
    confidence: float = DEFAULT_CONFIDENCE,
    label: str | None = None,
    names: tuple[str, str] | None = None,
) -> EvalResult:
    ids, out_a, out_b, excluded = paired_outcomes(a, b, gold)
    if not ids:
        raise UsageError(f"no item is parsed in both {a.path} and {b.path}: nothing to compare")
    name_a, name_b = names or (a.path.stem, b.path.stem)
    n = len(ids)
    n11 = sum(x and y for x, y in zip(out_a, out_b))
    n10 = sum(x and not y for x, y in zip(out_a, out_b))
    n01 = sum(y and not x for x, y in zip(out_a, out_b))
    n00 = n - n11 - n10 - n01
    outcome = "accuracy" if gold is not None else "hallucination_rate"
    ra = rate(n11 + n10, n, method, confidence)
    rb = rate(n11 + n01, n, method, confidence)
    # Newcombe's interval is for p_first - p_second; put B first so the difference is B - A.
    diff_ci = newcombe_paired_interval(n11, n01, n10, n00, confidence)
    test = mcnemar(n10, n01)
    body = {
        "outcome": outcome,
        "names": {"a": name_a, "b": name_b},
        "counts": {"items": n, "excluded_unparsed": excluded, "both": n11, "a_only": n10, "b_only": n01,
                   "neither": n00},
        "metrics": {
            f"{outcome}_a": ra.to_dict(),
            f"{outcome}_b": rb.to_dict(),
            "difference_b_minus_a": {"value": (n01 - n10) / n, "ci": diff_ci.to_dict()},
        },
        "mcnemar": test.to_dict(),
    }
    m = body["metrics"]
    word = "accuracy" if gold is not None else "hallucination rate"
    pos = "correct" if gold is not None else "hallucinated"
    d = m["difference_b_minus_a"]
    diff_text = (f"{100 * d['value']:+.1f} points [{100 * d['ci']['low']:+.1f}, {100 * d['ci']['high']:+.1f}]")
    summary = [("items (paired)", str(n)), (f"{word} A ({name_a})", est_text(m[f"{outcome}_a"])),
               (f"{word} B ({name_b})", est_text(m[f"{outcome}_b"])), ("difference B - A", diff_text),
               ("McNemar exact p", f"{test.p_exact:.4g}"), ("excluded (unparsed)", str(excluded))]
    cond = ("Outcome: judged correctly against gold (unparsed predictions count as wrong)." if gold is not None
            else "Outcome: hallucinated. Items unparsed in either file are left out of the paired analysis.")
    md = "\n".join([
        cond + " Difference B - A with Newcombe's paired 95% interval (method 10); McNemar's test on the "
        "discordant pairs (exact binomial p; continuity-corrected chi-square beside it).",
        "",
        markdown_table(["", "value [95% CI]"], [
            [f"{word} A ({name_a})", est_text(m[f"{outcome}_a"])],
            [f"{word} B ({name_b})", est_text(m[f"{outcome}_b"])],
            ["difference B - A", diff_text],
            ["McNemar exact p-value", f"{test.p_exact:.4g}"],
            ["McNemar chi-square (cc), p", f"{test.chi2:.3f}, {test.p_chi2:.4g}"],
        ]),
        "",
        "## Paired table",
        "",
        markdown_table(["", f"B {pos}", f"B not {pos}"], [
            [f"A {pos}", n11, n10], [f"A not {pos}", n01, n00]]),
        "",
        f"Items compared: {n}; left out (unparsed in A or B): {excluded}; "
        f"A {pct(ra.value)} vs B {pct(rb.value)}.",
    ])
    inputs = {"a": a, "b": b} | ({"gold": gold} if gold is not None else {})
    options = {"count_relevance": count_relevance, "interval": method, "confidence": confidence}
    return EvalResult("compare", label or f"{name_a} vs {name_b}", inputs, options, body, summary, md)
