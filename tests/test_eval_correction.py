"""`--checker-eval`: judged rates corrected for the judge's measured error, end to end on real files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.eval.stats import (
    independent_difference_interval,
    lang_reiczigel_interval,
    newcombe_paired_interval,
)

JUDGE = {"backend": "hf", "model": "models/judge", "adapter": "runs/tc/output", "prompt_sha256": "a" * 64}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judged(i: str, flag: bool | None, judge: dict = JUDGE, model: str = "gen") -> dict:
    ok = flag is not None
    verdict = (
        {
            "relevance": {"mistake": False, "explanation": ""},
            "groundedness": {
                "mistake": bool(flag),
                "mistakes": [{"text": "x", "type": "Evident Conflict", "explanation": "y"}] if flag else [],
            },
            "corrected_response": None,
        }
        if ok
        else None
    )
    return {
        "id": i,
        "model": model,
        "verdict": verdict,
        "parse_ok": ok,
        "hallucinated": flag,
        "judge": judge,
        "error": None,
    }


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def checker_eval(
    tmp: Path,
    tp: int,
    fn: int,
    fp: int,
    tn: int,
    judge: dict = JUDGE,
    name: str = "tc",
    unparsed_pos: int = 0,
    extra: list[str] = (),
) -> Path:
    """An `eval tc` result dir for a judge with the given confusion matrix on gold."""
    gold, pred = [], []
    cells = [(True, True, tp), (True, False, fn), (False, True, fp), (False, False, tn), (True, None, unparsed_pos)]
    k = 0
    for g, p, count in cells:
        for _ in range(count):
            gold.append({"id": f"g{k}", "hallucinated": g})
            pred.append(judged(f"g{k}", p, judge))
            k += 1
    gold_path = write(tmp / f"{name}-gold.jsonl", gold)
    pred_path = write(tmp / f"{name}-pred.jsonl", pred)
    out = tmp / name
    assert main(["eval", "tc", "--pred", str(pred_path), "--gold", str(gold_path), "--out", str(out), *extra]) == 0
    return out


def verdicts(tmp: Path, name: str, flags: list[bool | None], judge: dict = JUDGE) -> Path:
    return write(
        tmp / f"{name}.jsonl", [judged(f"r{k}", f, judge, model="m1" if k % 2 else "m2") for k, f in enumerate(flags)]
    )


def test_eval_tc_records_the_checker_identity(tmp_path):
    out = checker_eval(tmp_path, 24, 6, 7, 63)
    r = results(out)
    assert r["checker"] == JUDGE
    assert r["confusion_matrix"]["gold_hallucinated"] == {"flagged": 24, "not_flagged": 6, "unparsed": 0}


def test_eval_tc_takes_the_adapter_hash_and_prompt_style_from_the_judge_manifest(tmp_path):
    out = checker_eval(tmp_path, 24, 6, 7, 63)
    pred = tmp_path / "tc-pred.jsonl"
    (tmp_path / "tc-pred.jsonl.manifest.json").write_text(
        json.dumps({"kind": "mixft-judge", "settings": {"adapter_sha256": "b" * 64, "prompt": "tc"}})
    )
    gold = tmp_path / "tc-gold.jsonl"
    assert main(["eval", "tc", "--pred", str(pred), "--gold", str(gold), "--out", str(out), "--force"]) == 0
    assert results(out)["checker"] == JUDGE | {"adapter_sha256": "b" * 64, "prompt": "tc"}


def test_eval_rg_reports_the_corrected_rate_with_its_interval(tmp_path, capsys):
    tc = checker_eval(tmp_path, 24, 6, 7, 63)  # Se 24/30 = 0.8, Sp 63/70 = 0.9
    flags = [True] * 45 + [False] * 155 + [None] * 3  # 45 of 200 parsed flagged
    v = verdicts(tmp_path, "ft", flags)
    out = tmp_path / "rg"
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    r = results(out)
    corrected = r["metrics"]["hallucination_rate_corrected"]
    # Rogan-Gladen by hand: (45/200 + 0.9 - 1) / (0.8 + 0.9 - 1) = 0.125 / 0.7
    assert corrected["value"] == pytest.approx((45 / 200 + 63 / 70 - 1) / (24 / 30 + 63 / 70 - 1))
    ci = lang_reiczigel_interval(45, 200, 24, 30, 63, 70)
    assert (corrected["ci"]["low"], corrected["ci"]["high"]) == (ci.low, ci.high)
    assert corrected["ci"]["method"] == "lang-reiczigel" and "note" not in corrected
    assert r["metrics"]["hallucination_rate"]["value"] == 45 / 200  # the observed rate is untouched
    ce = r["checker_eval"]
    assert ce["identifiable"] is True and ce["checker"] == JUDGE
    assert (ce["sensitivity"]["numerator"], ce["sensitivity"]["denominator"]) == (24, 30)
    assert (ce["specificity"]["numerator"], ce["specificity"]["denominator"]) == (63, 70)
    j = independent_difference_interval(24, 30, 7, 70)
    assert ce["youden_j"]["ci"]["low"] == pytest.approx(j.low) and ce["youden_j"]["ci"]["low"] > 0
    assert r["options"]["checker_eval"] == str(tc / "results.json")
    assumption = (
        "the judge's sensitivity and specificity measured on the gold set carry over to the judged "
        "responses (same judge, same kind of responses)"
    )
    assert ce["assumption"] == assumption and f"Assumption: {assumption}." in (out / "report.md").read_text()
    # Breakdowns are corrected too, with the same judge error.
    for row in r["breakdown"]["model"]:
        k, n = row["hallucinated"], row["parsed"]
        assert row["hallucination_rate_corrected"]["ci"] == lang_reiczigel_interval(k, n, 24, 30, 63, 70).to_dict()
    md = (out / "report.md").read_text()
    assert "| hallucination rate corrected for the judge's error | 17.9% [" in md
    assert "(judge sensitivity 24/30, specificity 63/70)" in md and "## The judge's own error" in md
    assert "Lang-Reiczigel adjusted Wald" in md and "Wilson score" in md
    assert "corrected for the judge  17.9%" in printed


def test_a_blind_checker_makes_the_rate_not_identifiable_never_a_number(tmp_path):
    tc = checker_eval(tmp_path, 0, 10, 0, 24)  # the demo's checker: recall 0/10, flags nothing
    v = verdicts(tmp_path, "ft", [False] * 24)
    out = tmp_path / "rg"
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--out", str(out)]) == 0
    r = results(out)
    assert r["metrics"]["hallucination_rate"]["value"] == 0.0
    assert r["metrics"]["hallucination_rate_corrected"] == {
        "value": None,
        "ci": None,
        "note": "not identifiable: the checker's recall is 0/10",
    }
    assert r["checker_eval"]["identifiable"] is False
    assert "not identifiable: the checker's recall is 0/10" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "cells,reason",
    [
        ((5, 5, 12, 12), "no better than chance"),  # Se 0.5 + Sp 0.5 - 1 = 0
        ((6, 4, 10, 14), "not clearly above 0"),  # J = 0.6 + 0.583 - 1 = 0.18, interval reaches below 0
        ((0, 0, 3, 21), "no hallucinated gold item"),
        ((0, 0, 0, 0, 10), "every one of the checker's 10 outputs on the gold set is unparsed"),
    ],
)
def test_other_unidentifiable_judges_say_why(tmp_path, cells, reason):
    tc = checker_eval(tmp_path, *cells[:4], unparsed_pos=cells[4] if len(cells) > 4 else 0)
    v = verdicts(tmp_path, "ft", [True] * 5 + [False] * 20)
    out = tmp_path / "rg"
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--out", str(out)]) == 0
    corrected = results(out)["metrics"]["hallucination_rate_corrected"]
    assert corrected["value"] is None and corrected["note"].startswith("not identifiable: ")
    assert reason in corrected["note"]


def test_a_perfect_judge_leaves_the_rate_unchanged(tmp_path):
    tc = checker_eval(tmp_path, 30, 0, 0, 70)
    v = verdicts(tmp_path, "ft", [True] * 9 + [False] * 191)
    out = tmp_path / "rg"
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--out", str(out)]) == 0
    m = results(out)["metrics"]
    assert m["hallucination_rate_corrected"]["value"] == pytest.approx(m["hallucination_rate"]["value"])
    ci = m["hallucination_rate_corrected"]["ci"]
    assert ci["low"] < 9 / 200 < ci["high"]
    # ...and its interval is wider than the observed rate's: the judge's error is estimated, not known.
    assert ci["high"] - ci["low"] > m["hallucination_rate"]["ci"]["high"] - m["hallucination_rate"]["ci"]["low"]


@pytest.mark.parametrize(
    "field,value", [("model", "models/other"), ("adapter", "runs/tc2/output"), ("prompt_sha256", "c" * 64)]
)
def test_a_different_judge_is_refused_naming_both(tmp_path, capsys, field, value):
    tc = checker_eval(tmp_path, 24, 6, 7, 63)
    v = verdicts(tmp_path, "ft", [True] * 5 + [False] * 20, judge=JUDGE | {field: value})
    out = tmp_path / "rg"
    capsys.readouterr()
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --checker-eval: {v} and {tc / 'results.json'} come from different judges")
    assert f"differ in {field}" in err and f"{field}={value}" in err and f"{field}={JUDGE[field]}" in err
    assert err.count("\n") == 1  # one line
    assert not out.exists()


def test_the_adapter_hash_decides_when_both_sides_know_it(tmp_path, capsys):
    tc = checker_eval(tmp_path, 24, 6, 7, 63)
    for name in ("tc-pred.jsonl", "same.jsonl", "other.jsonl"):
        digest = "d" * 64 if name == "other.jsonl" else "b" * 64
        (tmp_path / f"{name}.manifest.json").write_text(json.dumps({"settings": {"adapter_sha256": digest}}))
    assert (
        main(
            [
                "eval",
                "tc",
                "--pred",
                str(tmp_path / "tc-pred.jsonl"),
                "--gold",
                str(tmp_path / "tc-gold.jsonl"),
                "--out",
                str(tc),
                "--force",
            ]
        )
        == 0
    )
    moved = JUDGE | {"adapter": "/elsewhere/runs/tc/output"}  # the same weights, given by another path
    same = verdicts(tmp_path, "same", [True] * 5 + [False] * 20, judge=moved)
    assert main(["eval", "rg", "--verdicts", str(same), "--checker-eval", str(tc)]) == 0
    other = verdicts(tmp_path, "other", [True] * 5 + [False] * 20)
    capsys.readouterr()
    assert main(["eval", "rg", "--verdicts", str(other), "--checker-eval", str(tc)]) == 2
    assert "differ in adapter_sha256" in capsys.readouterr().err


def test_unknown_or_mismatched_definitions_are_refused(tmp_path, capsys):
    tc = checker_eval(tmp_path, 24, 6, 7, 63)
    anonymous = write(tmp_path / "anon.jsonl", [{"id": "a", "hallucinated": True}, {"id": "b", "hallucinated": False}])
    assert main(["eval", "rg", "--verdicts", str(anonymous), "--checker-eval", str(tc)]) == 2
    assert "no row carries a 'judge' identity" in capsys.readouterr().err
    v = verdicts(tmp_path, "ft", [True] * 5 + [False] * 20)
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--count-relevance"]) == 2
    assert "count_relevance=False" in capsys.readouterr().err
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tmp_path / "nowhere")]) == 2
    assert "needs an `mixft eval tc --out` directory" in capsys.readouterr().err
    rg_out = tmp_path / "rg"
    assert main(["eval", "rg", "--verdicts", str(v), "--out", str(rg_out)]) == 0
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(rg_out)]) == 2
    assert "this is `eval rg`" in capsys.readouterr().err


def test_an_eval_tc_result_from_before_the_checker_field_still_works(tmp_path):
    tc = checker_eval(tmp_path, 24, 6, 7, 63)
    data = results(tc)
    del data["checker"]
    (tc / "results.json").write_text(json.dumps(data))
    v = verdicts(tmp_path, "ft", [True] * 5 + [False] * 20)
    assert main(["eval", "rg", "--verdicts", str(v), "--checker-eval", str(tc), "--out", str(tmp_path / "rg")]) == 0
    assert results(tmp_path / "rg")["metrics"]["hallucination_rate_corrected"]["value"] is not None


def test_eval_compare_corrects_the_paired_difference(tmp_path):
    tc = checker_eval(tmp_path, 27, 3, 4, 66)  # Se 0.9, Sp 66/70
    # 300 paired items: both 10, A only 30, B only 8, neither 252.
    a_flags = [True] * 10 + [True] * 30 + [False] * 8 + [False] * 252
    b_flags = [True] * 10 + [False] * 30 + [True] * 8 + [False] * 252
    a, b = verdicts(tmp_path, "raw", a_flags), verdicts(tmp_path, "ft", b_flags)
    out = tmp_path / "cmp"
    assert main(["eval", "compare", str(a), str(b), "--checker-eval", str(tc), "--out", str(out)]) == 0
    r = results(out)
    m = r["metrics"]
    se, sp = 27 / 30, 66 / 70
    youden = se + sp - 1
    d = m["difference_b_minus_a_corrected"]
    assert d["value"] == pytest.approx((8 - 30) / 300 / youden)
    assert d["ci"]["method"] == "mover-r" and d["ci"]["low"] < d["value"] < d["ci"]["high"]
    # Wider than the uncorrected paired interval scaled by 1/J: J is itself uncertain.
    raw = newcombe_paired_interval(10, 8, 30, 252)
    assert d["ci"]["low"] < raw.low / youden and d["ci"]["high"] > raw.high / youden
    assert m["hallucination_rate_corrected_a"]["value"] == pytest.approx((40 / 300 + sp - 1) / youden)
    assert m["hallucination_rate_corrected_b"]["value"] == pytest.approx(max(0.0, (18 / 300 + sp - 1) / youden))
    assert m["difference_b_minus_a"]["value"] == pytest.approx(-22 / 300)  # unchanged
    md = (out / "report.md").read_text()
    assert "difference B - A corrected for the judge" in md and "MOVER-R" in md


def test_compare_with_a_blind_checker_and_with_gold(tmp_path, capsys):
    blind = checker_eval(tmp_path, 0, 10, 0, 24)
    a, b = verdicts(tmp_path, "raw", [True] * 3 + [False] * 27), verdicts(tmp_path, "ft", [False] * 30)
    out = tmp_path / "cmp"
    assert main(["eval", "compare", str(a), str(b), "--checker-eval", str(blind), "--out", str(out)]) == 0
    d = results(out)["metrics"]["difference_b_minus_a_corrected"]
    assert d["value"] is None and d["note"] == "not identifiable: the checker's recall is 0/10"
    gold = write(tmp_path / "gold.jsonl", [{"id": f"r{k}", "hallucinated": k < 3} for k in range(30)])
    assert main(["eval", "compare", str(a), str(b), "--gold", str(gold), "--checker-eval", str(blind)]) == 2
    assert "needs no correction" in capsys.readouterr().err


def test_compare_with_nothing_parsed_in_both_is_undefined_not_an_error(tmp_path):
    a = verdicts(tmp_path, "raw", [None] * 10)
    b = verdicts(tmp_path, "ft", [True] * 10)
    out = tmp_path / "cmp"
    assert main(["eval", "compare", str(a), str(b), "--out", str(out)]) == 0
    r = results(out)
    assert r["counts"]["items"] == 0 and r["counts"]["excluded_unparsed"] == 10
    assert r["metrics"]["difference_b_minus_a"] == {
        "value": None,
        "ci": None,
        "note": "undefined: no item is parsed in both files",
    }
    assert r["mcnemar"] is None
    assert "n/a (undefined: no item is parsed in both files)" in (out / "report.md").read_text()


def test_the_report_shows_judge_error_and_corrected_rates(tmp_path, capsys):
    tc = checker_eval(tmp_path, 24, 6, 7, 63, extra=["--label", "judge"])
    blind = checker_eval(tmp_path, 0, 10, 0, 24, name="blind")
    ft = verdicts(tmp_path, "ft", [True] * 45 + [False] * 155)
    assert (
        main(
            [
                "eval",
                "rg",
                "--verdicts",
                str(ft),
                "--checker-eval",
                str(tc),
                "--label",
                "ft",
                "--out",
                str(tmp_path / "rg-ft"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "rg",
                "--verdicts",
                str(ft),
                "--checker-eval",
                str(blind),
                "--label",
                "ft (blind judge)",
                "--out",
                str(tmp_path / "rg-blind"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "rg",
                "--verdicts",
                str(ft),
                "--label",
                "ft (no checker eval)",
                "--out",
                str(tmp_path / "rg-plain"),
            ]
        )
        == 0
    )
    raw = verdicts(tmp_path, "raw", [True] * 60 + [False] * 140)
    assert (
        main(
            [
                "eval",
                "compare",
                str(raw),
                str(ft),
                "--checker-eval",
                str(tc),
                "--label",
                "raw vs ft",
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    assert (
        main(
            ["eval", "compare", str(raw), str(ft), "--label", "raw vs ft (plain)", "--out", str(tmp_path / "cmp-plain")]
        )
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                str(tmp_path / "rg-ft"),
                str(tmp_path / "rg-blind"),
                str(tmp_path / "rg-plain"),
                str(tc),
                str(tmp_path / "cmp"),
                str(tmp_path / "cmp-plain"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "not identifiable: the checker's recall is 0/10" in printed and "not corrected" in printed
    md = (out / "report.md").read_text()
    assert "| ft | 22.5% [17.3%, 28.8%] (45/200) | 17.9% [" in md
    assert "(judge sensitivity 24/30, specificity 63/70)" in md
    assert "| ft (blind judge) | 22.5% [17.3%, 28.8%] (45/200) | not identifiable: the checker's recall is 0/10 |" in md
    assert "| ft (no checker eval) | 22.5% [17.3%, 28.8%] (45/200) | not corrected (no --checker-eval" in md
    assert "| ft | 200 | 0 | 22.5% [17.3%, 28.8%] (45/200) | 80.0% [62.7%, 90.5%] (24/30) | 90.0% [" in md
    assert "Lang-Reiczigel adjusted Wald" in md
    assert "| comparison | judge sensitivity | judge specificity | A corrected | B corrected | B - A corrected |" in md
    assert "| raw vs ft | 80.0% [62.7%, 90.5%] (24/30) | 90.0% [80.8%, 95.1%] (63/70) | 28.6% [" in md
    assert "| raw vs ft (plain) | not measured | not measured | not corrected" in md
    assert math.isclose(
        json.loads((out / "report.json").read_text())["summary"][0]["hallucination_rate_corrected"]["value"],
        (0.225 + 0.9 - 1) / 0.7,
    )
