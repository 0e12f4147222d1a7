"""`mixft eval ...` end to end on real files: outputs, recomputation from per-item files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.eval.stats import mcnemar_exact_p, newcombe_paired_interval, wilson_interval
from mixtral_ft.util.hashing import sha256_file

JUDGE = {"backend": "openai", "model": "judge-x", "adapter": None, "prompt_sha256": "f" * 64}


def verdict(halluc: bool, relevance: bool = False, kind: str = "Evident Conflict") -> dict:
    return {
        "relevance": {"mistake": relevance, "explanation": ""},
        "groundedness": {
            "mistake": halluc,
            "mistakes": [{"text": "x", "type": kind, "explanation": "y"}] if halluc else [],
        },
        "corrected_response": None,
    }


def judgement(i: str, halluc: bool | None, score=None, model="m1", source="s1", relevance=False) -> dict:
    ok = halluc is not None
    return {
        "id": i,
        "source": source,
        "model": model,
        "group": i,
        "verdict": verdict(halluc, relevance) if ok else None,
        "parse_ok": ok,
        "parse_error": None if ok else "no JSON object in output",
        "raw": "...",
        "hallucinated": halluc,
        "score": score,
        "latency_s": 0.1,
        "judge": JUDGE,
    }


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load_flags(path: Path, count_relevance: bool = False) -> dict[str, bool | None]:
    """An independent re-reading of a per-item file (no mixft code): id -> hallucinated or None."""
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("parse_ok") is False:
            out[r["id"]] = None
        elif isinstance(r.get("verdict"), dict):
            v = r["verdict"]
            out[r["id"]] = v["groundedness"]["mistake"] or (count_relevance and v["relevance"]["mistake"])
        elif isinstance(r.get("hallucinated"), bool):
            out[r["id"]] = r["hallucinated"]
        elif isinstance(r.get("labels"), list):
            out[r["id"]] = bool(r["labels"])
        else:
            out[r["id"]] = None
    return out


@pytest.fixture()
def files(tmp_path):
    # 10 responses; gold: 4 hallucinated. Checker: 1 unparsed, scores everywhere it parsed.
    gold_flags = [True, True, True, True, False, False, False, False, False, False]
    gold = write(
        tmp_path / "gold.jsonl",
        [
            {
                "id": f"q{i}",
                "source": "kb",
                "model": "gen",
                "verdict": verdict(h, relevance=(i == 9)),
                "hallucinated": h,
            }
            for i, h in enumerate(gold_flags)
        ],
    )
    pred_flags = [True, True, False, None, True, False, False, False, False, False]
    scores = [0.9, 0.8, 0.3, None, 0.7, 0.2, 0.1, 0.15, 0.05, 0.25]
    checker = write(
        tmp_path / "checker.jsonl",
        [
            judgement(f"q{i}", h, s, model="gen", source="kb" if i < 6 else "web")
            for i, (h, s) in enumerate(zip(pred_flags, scores))
        ],
    )
    return tmp_path, gold, checker


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_eval_rg_writes_results_and_report(files, capsys):
    tmp, gold, checker = files
    out = tmp / "rg"
    assert main(["eval", "rg", "--verdicts", str(checker), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hallucination rate" in printed and "3/9" in printed
    r = results(out)
    assert r["kind"] == "rg" and r["inputs"]["verdicts"]["sha256"] == sha256_file(checker)
    assert r["judges"] == [JUDGE] and r["prompt_sha256"] == ["f" * 64]
    assert r["environment"]["packages"]["mixtral-ft"]
    assert r["command"][:3] == ["mixft", "eval", "rg"]
    # Recompute every headline number from the per-item file.
    flags = load_flags(checker)
    parsed = [f for f in flags.values() if f is not None]
    m = r["metrics"]["hallucination_rate"]
    assert (m["numerator"], m["denominator"]) == (sum(parsed), len(parsed))
    w = wilson_interval(sum(parsed), len(parsed))
    assert (m["ci"]["low"], m["ci"]["high"]) == (w.low, w.high)
    assert r["counts"]["unparsed"] == sum(f is None for f in flags.values()) == 1
    by_source = {row["source"]: row for row in r["breakdown"]["source"]}
    assert by_source["kb"]["hallucinated"] == 3 and by_source["kb"]["unparsed"] == 1
    assert by_source["web"]["hallucination_rate"]["value"] == 0.0
    assert r["mistake_types"] == [{"type": "Evident Conflict", "items": 3, "share_of_parsed": 3 / 9}]
    md = (out / "report.md").read_text()
    assert "| hallucination rate (as judged) | 33.3%" in md and "Intervals: 95% Wilson score." in md
    assert "## By source" in md and "never counted as clean" in md


def test_count_relevance_applies_to_every_input(files):
    tmp, gold, _ = files
    assert main(["eval", "rg", "--verdicts", str(gold), "--out", str(tmp / "a")]) == 0
    assert main(["eval", "rg", "--verdicts", str(gold), "--out", str(tmp / "b"), "--count-relevance"]) == 0
    assert results(tmp / "a")["metrics"]["hallucination_rate"]["numerator"] == 4
    assert results(tmp / "b")["metrics"]["hallucination_rate"]["numerator"] == 5
    assert results(tmp / "b")["metrics"]["relevance_mistake_rate"]["numerator"] == 1


def test_eval_tc_recomputes_from_files(files, capsys):
    tmp, gold, checker = files
    out = tmp / "tc"
    assert main(["eval", "tc", "--pred", str(checker), "--gold", str(gold), "--out", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    r = results(out)
    g, p = load_flags(gold), load_flags(checker)
    tp = sum(g[i] and p[i] is True for i in g)
    fp = sum(not g[i] and p[i] is True for i in g)
    tn = sum(not g[i] and p[i] is False for i in g)
    pos = sum(g.values())
    m = r["metrics"]
    assert (m["accuracy"]["numerator"], m["accuracy"]["denominator"]) == (tp + tn, len(g)) == (7, 10)
    assert (m["precision"]["numerator"], m["precision"]["denominator"]) == (tp, tp + fp) == (2, 3)
    assert (m["recall"]["numerator"], m["recall"]["denominator"]) == (tp, pos) == (2, 4)
    assert m["parse_failure_rate"]["numerator"] == 1
    assert r["confusion_matrix"]["gold_hallucinated"] == {"flagged": 2, "not_flagged": 1, "unparsed": 1}
    assert m["f1"]["value"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert "## Confusion matrix" in (out / "report.md").read_text()


def test_mismatched_ids_are_an_error_naming_missing_ids(files, capsys):
    tmp, gold, checker = files
    rows = [json.loads(x) for x in checker.read_text().splitlines()][:-2]
    short = write(tmp / "short.jsonl", rows)
    out = tmp / "never"
    assert main(["eval", "tc", "--pred", str(short), "--gold", str(gold), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 id(s) in gold") and "'q8', 'q9'" in err and "no silent inner join" in err
    assert not out.exists()
    assert main(["eval", "compare", str(short), str(checker)]) == 2


def test_bad_rows_are_reported_with_file_line_field(tmp_path, capsys):
    bad = write(
        tmp_path / "bad.jsonl",
        [
            {"id": "a", "hallucinated": "yes"},
            {"id": "b", "verdict": {"groundedness": {"mistake": True}}},
            {"id": "a", "hallucinated": True},
            {"question": "no id"},
            {"id": "c"},
            {"id": "d", "hallucinated": True, "score": 1.5},
        ],
    )
    assert main(["eval", "rg", "--verdicts", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: hallucinated: expected true, false or null" in err
    assert f"{bad}:2: verdict:" in err
    assert f"{bad}:3: id: duplicate id 'a'" in err
    assert f"{bad}:4: id: missing" in err
    assert f"{bad}:5: verdict: no label" in err
    assert f"{bad}:6: score:" in err
    empty = write(tmp_path / "empty.jsonl", [])
    assert main(["eval", "rg", "--verdicts", str(empty)]) == 2
    assert "no items" in capsys.readouterr().err
    gold = write(tmp_path / "gold.jsonl", [{"id": "a", "hallucinated": None}])
    assert main(["eval", "tc", "--pred", str(gold), "--gold", str(gold)]) == 2
    assert "gold label missing" in capsys.readouterr().err


def test_eval_pipeline_and_risk_coverage(files):
    tmp, gold, checker = files
    out = tmp / "pipe"
    assert main(["eval", "pipeline", "--gold", str(gold), "--checker", str(checker), "--out", str(out)]) == 0
    r = results(out)
    g, p = load_flags(gold), load_flags(checker)
    rejected = {i for i in g if p[i] is not False}  # flagged or unparsed (default: reject)
    hall_acc = sum(g[i] for i in g if i not in rejected)
    m = r["metrics"]
    assert (m["rejection_rate"]["numerator"], m["rejection_rate"]["denominator"]) == (len(rejected), 10) == (4, 10)
    assert (m["net_hallucination_rate_all"]["numerator"], m["net_hallucination_rate_all"]["denominator"]) == (
        hall_acc,
        10,
    )
    assert m["net_hallucination_rate_accepted"]["denominator"] == 10 - len(rejected)
    assert hall_acc == 1  # q2: hallucinated, not flagged
    rc = r["risk_coverage"]
    assert rc[0]["threshold"] is None and rc[0]["rejected"] == 1  # the unscored, unparsed one
    assert rc[-1]["coverage"] == 0.0
    assert "## Risk-coverage" in (out / "report.md").read_text()
    # --unparsed accept and a score threshold
    out2 = tmp / "pipe2"
    assert (
        main(
            [
                "eval",
                "pipeline",
                "--gold",
                str(gold),
                "--checker",
                str(checker),
                "--out",
                str(out2),
                "--unparsed",
                "accept",
                "--threshold",
                "0.5",
            ]
        )
        == 0
    )
    m2 = results(out2)["metrics"]
    assert m2["rejection_rate"]["numerator"] == 3
    assert m2["net_hallucination_rate_all"]["numerator"] == 2  # q2 and the unparsed q3 get through


def test_eval_compare_paired(tmp_path, capsys):
    a_flags = [True] * 8 + [False] * 22 + [None]
    b_flags = [True] * 2 + [False] * 6 + [True] * 1 + [False] * 21 + [False]
    a = write(tmp_path / "raw.jsonl", [judgement(f"i{k}", h) for k, h in enumerate(a_flags)])
    b = write(tmp_path / "ft.jsonl", [judgement(f"i{k}", h) for k, h in enumerate(b_flags)])
    out = tmp_path / "cmp"
    assert main(["eval", "compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "McNemar exact p" in printed
    r = results(out)
    assert r["counts"] == {"items": 30, "excluded_unparsed": 1, "both": 2, "a_only": 6, "b_only": 1, "neither": 21}
    assert r["mcnemar"]["p_value_exact"] == pytest.approx(mcnemar_exact_p(6, 1))
    d = r["metrics"]["difference_b_minus_a"]
    assert d["value"] == pytest.approx((3 - 8) / 30)
    ci = newcombe_paired_interval(2, 1, 6, 21)
    assert (d["ci"]["low"], d["ci"]["high"]) == (ci.low, ci.high)
    assert r["metrics"]["hallucination_rate_a"]["numerator"] == 8


def test_compare_accuracy_against_gold(files):
    tmp, gold, checker = files
    everything = write(tmp / "all.jsonl", [{"id": f"q{i}", "hallucinated": True} for i in range(10)])
    out = tmp / "cmp"
    assert main(["eval", "compare", str(everything), str(checker), "--gold", str(gold), "--out", str(out)]) == 0
    r = results(out)
    assert r["outcome"] == "accuracy"
    assert r["metrics"]["accuracy_a"]["numerator"] == 4 and r["metrics"]["accuracy_b"]["numerator"] == 7


def test_existing_out_needs_force(files, capsys):
    tmp, _, checker = files
    out = tmp / "rg"
    assert main(["eval", "rg", "--verdicts", str(checker), "--out", str(out)]) == 0
    assert main(["eval", "rg", "--verdicts", str(checker), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["eval", "rg", "--verdicts", str(checker), "--out", str(out), "--force", "--by", "model"]) == 0
    assert list(results(out)["breakdown"]) == ["model"]
    assert main(["eval", "rg", "--verdicts", str(checker), "--by", "modle"]) == 2
    assert "Invalid value for '--by': Unknown field 'modle'. Did you mean 'model'?" in capsys.readouterr().err


def test_eval_refuses_judgements_whose_request_failed(tmp_path, capsys):
    """A failed request (judge row with `error`) is neither clean nor unparsed: eval stops and says to retry."""
    path = tmp_path / "judged.jsonl"
    rows = [
        {"id": "a", "verdict": None, "parse_ok": False, "hallucinated": None, "error": "HTTP 503 after 5 attempts"},
        {
            "id": "b",
            "verdict": {
                "relevance": {"mistake": False, "explanation": ""},
                "groundedness": {"mistake": False, "mistakes": []},
                "corrected_response": None,
            },
            "parse_ok": True,
            "hallucinated": False,
            "error": None,
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "rg", "--verdicts", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: error: the request for this item failed (HTTP 503 after 5 attempts)" in err


CAPTIONS = {"wilson": "Wilson score", "clopper-pearson": "Clopper-Pearson exact"}


@pytest.mark.parametrize("interval", ["wilson", "clopper-pearson"])
def test_every_eval_command_captions_the_interval_it_computed(files, interval):
    """report.md names the method stored in results.json, for each --interval (never a fixed caption)."""
    from mixtral_ft.eval.stats import proportion_interval

    tmp, gold, checker = files
    runs = {
        "rg": ["eval", "rg", "--verdicts", str(checker)],
        "tc": ["eval", "tc", "--pred", str(checker), "--gold", str(gold)],
        "pipeline": ["eval", "pipeline", "--gold", str(gold), "--checker", str(checker)],
        "compare": ["eval", "compare", str(gold), str(checker)],
    }
    other = CAPTIONS["clopper-pearson" if interval == "wilson" else "wilson"]
    for kind, argv in runs.items():
        out = tmp / f"{kind}-{interval}"
        assert main([*argv, "--interval", interval, "--out", str(out)]) == 0
        r = results(out)
        assert r["options"]["interval"] == interval
        md = (out / "report.md").read_text()
        assert CAPTIONS[interval] in md, kind
        assert other not in md, kind
        proportions = [m for k, m in r["metrics"].items() if m.get("denominator") and not k.startswith("difference")]
        for m in proportions:
            assert m["ci"]["method"] == interval
            ci = proportion_interval(m["numerator"], m["denominator"], interval)
            assert (m["ci"]["low"], m["ci"]["high"]) == (ci.low, ci.high)
    tc = results(tmp / f"tc-{interval}")["metrics"]
    assert tc["f1"]["ci"]["method"] == f"jaccard-{interval}"
    assert tc["balanced_accuracy"]["ci"]["method"] == f"mover-{interval}"


def test_unknown_interval_or_policy_is_refused_with_the_choices(files, capsys):
    _tmp, gold, checker = files
    assert main(["eval", "rg", "--verdicts", str(checker), "--interval", "wald"]) == 2
    assert "Unknown interval method 'wald'. Available: clopper-pearson, wilson" in capsys.readouterr().err
    assert main(["eval", "pipeline", "--gold", str(gold), "--checker", str(checker), "--unparsed", "drop"]) == 2
    assert "Unknown policy 'drop'. Available: accept, reject" in capsys.readouterr().err


def test_help_lists_the_fixed_choices():
    from typer.testing import CliRunner

    from mixtral_ft.cli.main import app

    runner = CliRunner()
    for argv, shown in (
        (["eval", "rg", "--help"], ["wilson", "clopper-pearson", "source", "model"]),
        (["eval", "pipeline", "--help"], ["reject", "accept", "wilson"]),
        (["demo", "--help"], ["smollm2", "tiny"]),
    ):
        text = runner.invoke(app, argv, terminal_width=200, env={"COLUMNS": "200"}).output
        for choice in shown:
            assert choice in text, (argv, choice)
