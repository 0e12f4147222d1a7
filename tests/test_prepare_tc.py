"""`mixft prepare tc`: label forms, sources and augmentation, corrections, the split, bad input,
determinism, and the real RAGTruth QA annotations."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.errors import InputError, UsageError
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import run_prepare
from mixtral_ft.prepare.readers import parse_input
from mixtral_ft.prepare.split import parse_test_size
from mixtral_ft.prepare.tc import TcTask, parse_inputs
from mixtral_ft.tc.prompt import render_tc_prompt, template_sha256
from mixtral_ft.tc.verdict import is_hallucinated, parse_verdict, verdict_from_dict

CLEAN = {
    "relevance": {"mistake": False, "explanation": ""},
    "groundedness": {"mistake": False, "mistakes": []},
    "corrected_response": None,
}


def hallu(text: str, corrected: str | None = None) -> dict:
    return {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {
            "mistake": True,
            "mistakes": [{"text": text, "type": "Evident Conflict", "explanation": "The context says otherwise."}],
        },
        "corrected_response": corrected,
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def make_rows(n_groups: int, per_group: int = 2, prefix: str = "r", every_hallu: int = 3) -> list[dict]:
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            i = g * per_group + k
            label = hallu(f"{i + 1} days") if i % every_hallu == 0 else CLEAN
            rows.append(
                {
                    "id": f"{prefix}{i}",
                    "group": f"q{g}",
                    "context": [f"Returns are accepted within {g} days.", "A receipt is needed."],
                    "question": f"How long is return window {g}?",
                    "response": f"It is {i + 1} days.",
                    "model": "m1",
                    "verdict": label,
                }
            )
    return rows


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


TASK_OPTIONS = ("augment", "augment_cap", "judgements", "corrections", "count_relevance", "template")


def run(tmp_path: Path, inputs, name="out", format=None, test_size=None, **kw):
    """``prepare tc`` through the library, options spelled as on the command line."""
    task = {k: kw.pop(k) for k in TASK_OPTIONS if k in kw}
    task["augment"] = tuple(parse_inputs(task.get("augment", ()), format))
    task["judgements"] = tuple(parse_input(j, "jsonl") for j in task.get("judgements", ()))
    opts = PrepareOptions(
        inputs=parse_inputs([str(i) for i in inputs], format),
        out=tmp_path / name,
        test_size=parse_test_size(test_size) if test_size is not None else None,
        **kw,
    )
    return run_prepare(opts, TcTask(format=format, **task))


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(resources.files("mixtral_ft.resources").joinpath("verdict.schema.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema)


# ---------------------------------------------------------------------------- RAGTruth


def test_ragtruth_counts_split_and_schema(tmp_path, ragtruth_path, validator):
    result = run(tmp_path, [ragtruth_path], format="ragtruth", test_size="0.2")
    s = result.summary
    assert (s["rows"], s["hallucinated"], s["mistakes"]) == (817, 259, 387)
    train, test = read(result.out / "train.jsonl"), read(result.out / "test.jsonl")
    assert len(train) + len(test) == 817 and len(test) > 50
    assert not {r["source_id"] for r in train} & {r["source_id"] for r in test}
    assert {r["group"] for r in train + test} == {str(r["source_id"]) for r in train + test}
    assert sum(len(r["verdict"]["groundedness"]["mistakes"]) for r in train + test) == 387
    types = set()
    for r in train + test:
        validator.validate(r["verdict"])
        parsed = parse_verdict(r["completion"])
        assert parsed.ok and parsed.verdict.to_dict() == r["verdict"]
        assert r["hallucinated"] == is_hallucinated(parsed.verdict) == bool(r["labels"])
        types |= {m["type"] for m in r["verdict"]["groundedness"]["mistakes"]}
    assert types == {"Evident Conflict", "Subtle Conflict", "Evident Baseless Info", "Subtle Baseless Info"}
    # the prompt is exactly what `mixft judge` renders from the same row
    r = train[0]
    assert r["prompt"] == render_tc_prompt(r["context"], r["question"], r["response"])
    assert s["by_model"]["llama-2-7b-chat"]["hallucinated"] == 84
    assert s["by_model"]["gpt-4-0613"] == {
        "rows": 138,
        "train": s["by_model"]["gpt-4-0613"]["train"],
        "test": s["by_model"]["gpt-4-0613"]["test"],
        "hallucinated": 5,
        "mistakes": 5,
        "hallucinated_share": round(5 / 138, 4),
    }
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["prompt_sha256"] == template_sha256()
    assert manifest["summary"]["train"] == len(train) and manifest["inputs"][0]["format"] == "ragtruth"


def test_ragtruth_span_becomes_mistake_with_annotator_explanation(tmp_path, ragtruth_path):
    out = run(tmp_path, [ragtruth_path], format="ragtruth").out
    rows = {r["id"]: r for r in read(out / "train.jsonl") + read(out / "test.jsonl")}
    r = next(r for r in rows.values() if r["labels"] and r["labels"][0]["meta"])
    m = r["verdict"]["groundedness"]["mistakes"][0]
    assert (m["text"], m["type"], m["explanation"]) == (
        r["labels"][0]["text"],
        r["labels"][0]["label_type"],
        r["labels"][0]["meta"].strip(),
    )
    # the one span whose annotator left no explanation gets an empty one, not an invented one
    assert any(m["explanation"] == "" for r in rows.values() for m in r["verdict"]["groundedness"]["mistakes"])


# ---------------------------------------------------------------------------- label forms


def test_three_label_forms(tmp_path):
    base = {"context": "The shop opens at 9.", "question": "When does the shop open?"}
    rows = [
        {**base, "id": "v", "response": "At 10.", "verdict": hallu("At 10.", "At 9.")},
        {**base, "id": "b1", "response": "At 9, or 10.", "hallucinated": True},
        {**base, "id": "b0", "response": "At 9.", "hallucinated": False},
        {
            **base,
            "id": "s",
            "response": "At 9 on weekdays.",
            "labels": [
                {
                    "text": "on weekdays",
                    "label_type": "Subtle Baseless Info",
                    "meta": "Days are not given.",
                    "start": 6,
                    "end": 17,
                }
            ],
        },
        {**base, "id": "s0", "response": "It opens at 9.", "labels": []},
        {**base, "id": "vb", "response": "At 10!", "verdict": hallu("At 10!"), "hallucinated": True},
    ]
    out = run(tmp_path, [write_jsonl(tmp_path / "in.jsonl", rows)], test_size="1").out
    got = {r["id"]: r for r in read(out / "train.jsonl") + read(out / "test.jsonl")}
    assert got["v"]["verdict"] == hallu("At 10.", "At 9.")
    assert got["b1"]["verdict"]["groundedness"] == {"mistake": True, "mistakes": []}
    assert got["b0"]["verdict"] == CLEAN and got["s0"]["verdict"] == CLEAN
    assert got["s"]["verdict"]["groundedness"]["mistakes"] == [
        {"text": "on weekdays", "type": "Subtle Baseless Info", "explanation": "Days are not given."}
    ]
    assert {k: r["hallucinated"] for k, r in got.items()} == {
        "v": True,
        "b1": True,
        "b0": False,
        "s": True,
        "s0": False,
        "vb": True,
    }
    for r in got.values():
        assert verdict_from_dict(json.loads(r["completion"])).to_dict() == r["verdict"]


@pytest.mark.parametrize(
    "row,message",
    [
        (
            {"hallucinated": False, "verdict": hallu("x")},
            "in.jsonl:1: hallucinated: false contradicts the verdict label",
        ),
        ({"hallucinated": "yes"}, "in.jsonl:1: hallucinated: expected true or false"),
        ({}, "in.jsonl:1: verdict: no label"),
        (
            {
                "verdict": {
                    **CLEAN,
                    "groundedness": {"mistake": False, "mistakes": hallu("x")["groundedness"]["mistakes"]},
                }
            },
            "in.jsonl:1: verdict.groundedness: mistake is false but 1 mistake(s) are listed",
        ),
        ({"verdict": {**CLEAN, "extra": 1}}, "in.jsonl:1: verdict: unexpected key(s) 'extra'"),
        ({"labels": [{"text": "x", "meta": "m"}]}, "in.jsonl:1: labels[0].label_type: must be a non-empty string"),
        ({"labels": [], "verdict": CLEAN}, "in.jsonl:1: labels: both 'verdict' and 'labels' are given"),
        ({"verdict": CLEAN, "question": 5}, "in.jsonl:1: question: expected a string, got number"),
        ({"verdict": CLEAN, "response": "   "}, "in.jsonl:1: response: empty"),
        ({"verdict": CLEAN, "context": ["ok", 3]}, "in.jsonl:1: context: item 1 of the list"),
        ({"verdict": CLEAN, "id": None}, "in.jsonl:1: id: missing"),
        ({"verdict": CLEAN, "corrected_response": 1}, "in.jsonl:1: corrected_response: expected a string or null"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, monkeypatch, row, message):
    monkeypatch.chdir(tmp_path)
    full = {"id": "a", "context": "c", "question": "q", "response": "r", **row}
    full = {k: v for k, v in full.items() if v is not None or k != "id"}
    write_jsonl(tmp_path / "in.jsonl", [full])
    with pytest.raises(InputError) as e:
        run_prepare(PrepareOptions(inputs=parse_inputs(["in.jsonl"]), out=Path("out")), TcTask())
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


def test_all_problems_at_once_then_skip_invalid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = make_rows(6)
    rows[1] = {**rows[1], "question": None}
    rows[4] = {**rows[4], "verdict": {**CLEAN, "relevance": "fine"}}
    rows.insert(7, "{not json")
    rows.append(dict(rows[0]))  # duplicate id
    write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["prepare", "tc", "in.jsonl", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:2: question: missing" in err
    assert "in.jsonl:5: verdict.relevance: expected an object, got string" in err
    assert "in.jsonl:8: invalid JSON" in err
    assert "in.jsonl:14: id: duplicate id 'r0' (first at in.jsonl:1)" in err
    assert "--skip-invalid" in err and not (tmp_path / "out").exists()

    assert main(["prepare", "tc", "in.jsonl", "--out", "out", "--skip-invalid"]) == 0
    rejected = read(tmp_path / "out" / "rejected.jsonl")
    assert [r["line"] for r in rejected] == [2, 5, 8, 14]
    assert rejected[0]["row"]["id"] == "r1" and rejected[2]["raw"] == "{not json" and "row" not in rejected[2]
    assert len(read(tmp_path / "out" / "train.jsonl")) + len(read(tmp_path / "out" / "test.jsonl")) == 10


def test_file_level_errors(tmp_path):
    with pytest.raises(InputError, match="missing.jsonl: file not found"):
        run(tmp_path, [tmp_path / "missing.jsonl"])
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(make_rows(1)[0]).encode() + b"\n")
    with pytest.raises(InputError, match="byte-order mark"):
        run(tmp_path, [tmp_path / "bom.jsonl"], skip_invalid=True)
    with pytest.raises(UsageError, match="Did you mean 'ragtruth'"):
        run(tmp_path, [tmp_path / "bom.jsonl"], format="ragtruht")
    good = write_jsonl(tmp_path / "good.jsonl", make_rows(3))
    with pytest.raises(UsageError, match="--augment-cap needs"):
        run(tmp_path, [good], augment_cap=3)
    with pytest.raises(UsageError, match="Did you mean 'from-clean'"):
        run(tmp_path, [good], corrections="from_clean")
    run(tmp_path, [good])
    with pytest.raises(UsageError, match="already exists; use --force"):
        run(tmp_path, [good])
    with pytest.raises(UsageError, match="leaves no training rows"):
        run(tmp_path, [good], name="all-test", test_size="10")


# ---------------------------------------------------------------------------- sources, augmentation, corrections


def test_sources_augment_cap_and_summary(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rg.jsonl", make_rows(20, prefix="rg", every_hallu=10))
    write_jsonl(tmp_path / "live.jsonl", [{**r, "model": "m2"} for r in make_rows(10, prefix="live", every_hallu=5)])
    # augmentation: other questions, plus two rows on questions the main inputs also have
    aug = [{**r, "group": f"a{r['group']}", "model": "gpt-3.5"} for r in make_rows(30, prefix="aug", every_hallu=2)]
    aug[0]["group"] = aug[1]["group"] = "q0"
    write_jsonl(tmp_path / "gpt35.jsonl", aug)
    args = [
        "prepare",
        "tc",
        "rg=rg.jsonl",
        "live=live.jsonl",
        "--augment",
        "gpt35=gpt35.jsonl",
        "--augment-cap",
        "25",
        "--test-size",
        "0.3",
        "--out",
        "out",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    train, test = read(tmp_path / "out" / "train.jsonl"), read(tmp_path / "out" / "test.jsonl")
    by = summary["by_source"]
    assert set(by) == {"rg", "live", "gpt35"}
    assert by["rg"]["rows"] == 40 and by["live"]["rows"] == 20
    assert by["gpt35"]["rows"] == 25 and by["gpt35"]["test"] == 0
    assert not any(r["source"] == "gpt35" for r in test)
    assert by["rg"]["hallucinated"] == 4 and by["rg"]["hallucinated_share"] == 0.1
    assert by["gpt35"]["hallucinated"] == sum(r["hallucinated"] for r in train if r["source"] == "gpt35")
    q0_side = "test" if any(r["group"] == "q0" for r in test) else "train"
    assert summary["augment"]["dropped_test_group"] == (2 if q0_side == "test" else 0)
    assert summary["augment"]["dropped_cap"] == 60 - 25 - summary["augment"]["dropped_test_group"]
    assert set(summary["by_model"]) == {"m1", "m2", "gpt-3.5"}
    assert not {r["group"] for r in train} & {r["group"] for r in test}
    for line in ("rg ", "live ", "gpt35 ", "10.0%"):
        assert line in printed
    # the cap is a seeded, order-independent choice: reversing the augment file keeps the same rows
    write_jsonl(tmp_path / "gpt35.jsonl", list(reversed(aug)))
    assert main([*args[:-1], "out2"]) == 0
    ids = lambda d: sorted(r["id"] for r in read(tmp_path / d / "train.jsonl") if r["source"] == "gpt35")  # noqa: E731
    assert ids("out") == ids("out2")


def test_corrections(tmp_path):
    base = {"group": "g", "question_id": "q1", "context": "Open 9-5.", "question": "Hours?"}
    rows = [
        {**base, "id": "h1", "response": "Open 8-5.", "verdict": hallu("8-5")},
        {**base, "id": "h2", "response": "Open 9-6.", "verdict": hallu("9-6"), "corrected_response": "Open 9-5!"},
        {**base, "id": "h3", "response": "Open 9-7.", "verdict": hallu("9-7", "Open from 9 to 5.")},
        {**base, "id": "c2", "response": "Open 9 to 5.", "verdict": CLEAN},
        {**base, "id": "c1", "response": "Open 9-5.", "verdict": CLEAN},
        {**base, "id": "x", "question_id": "q2", "question": "Days?", "response": "Mondays.", "hallucinated": True},
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    def corrected(out):
        return {
            r["id"]: r["verdict"]["corrected_response"] for r in read(out / "train.jsonl") + read(out / "test.jsonl")
        }

    assert corrected(run(tmp_path, [path], name="a").out) == {
        "h1": None,
        "h2": "Open 9-5!",
        "h3": "Open from 9 to 5.",
        "c1": None,
        "c2": None,
        "x": None,
    }
    result = run(tmp_path, [path], name="b", corrections="from-clean")
    assert corrected(result.out) == {
        "h1": "Open 9-5.",
        "h2": "Open 9-5!",
        "h3": "Open from 9 to 5.",
        "c1": None,
        "c2": None,
        "x": None,
    }
    assert result.summary["corrections_from_clean"] == 1


def test_judgements_label_generations(tmp_path):
    gens = [
        {
            "id": f"g{i}",
            "source": "rg-test",
            "context": "Ctx.",
            "question": f"Q{i}?",
            "response": f"A{i}.",
            "model": {"name": "mixtral-ft-rg", "adapter": "out/rg"},
        }
        for i in range(4)
    ]
    judged = [
        {"id": "g0", "verdict": hallu("A0"), "parse_ok": True, "hallucinated": True},
        {"id": "g1", "verdict": CLEAN, "parse_ok": True, "hallucinated": False},
        {"id": "g2", "verdict": None, "parse_ok": False, "parse_error": "no JSON object in output"},
        {"id": "zz", "verdict": CLEAN, "parse_ok": True},
    ]
    g, j = write_jsonl(tmp_path / "gens.jsonl", gens), write_jsonl(tmp_path / "judge.jsonl", judged)
    with pytest.raises(InputError) as e:
        run(tmp_path, [g], judgements=(str(j),))
    assert "gens.jsonl:3: verdict: the judgement at" in str(e.value) and "no JSON object in output" in str(e.value)
    assert "gens.jsonl:4: verdict: no label" in str(e.value)
    result = run(tmp_path, [g], judgements=(str(j),), skip_invalid=True, test_size="1")
    rows = {r["id"]: r for r in read(result.out / "train.jsonl") + read(result.out / "test.jsonl")}
    assert set(rows) == {"g0", "g1"} and rows["g0"]["hallucinated"] and rows["g0"]["model"] == "mixtral-ft-rg"
    assert result.summary["judgements_unused"] == 1 and result.summary["by_source"]["rg-test"]["rows"] == 2


# ---------------------------------------------------------------------------- split and determinism


def test_deterministic_bytes_and_stable_split(tmp_path):
    rows = make_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    shuffled = write_jsonl(tmp_path / "shuffled.jsonl", rows[1::2] + list(reversed(rows[::2])))
    a = run(tmp_path, [f"rg={path}"], name="a", test_size="0.3").out
    b = run(tmp_path, [f"rg={shuffled}"], name="b", test_size="0.3").out
    for f in ("train.jsonl", "test.jsonl", "rejected.jsonl", "summary.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()  # the same rows in any order: the same bytes
    side = lambda d: {r["id"]: s for s in ("train", "test") for r in read(d / f"{s}.jsonl")}  # noqa: E731
    assert sum(s == "test" for s in side(a).values()) == 24  # ceil(0.3 x 80 rows), in groups of 2
    # more rows, in another order, with a count: no training row moves to test
    before = side(run(tmp_path, [path], name="c", test_size="24").out)
    new = [{**r, "group": "n" + r["group"]} for r in make_rows(30, prefix="new")]
    write_jsonl(tmp_path / "more.jsonl", list(reversed(rows + new)))
    after = side(run(tmp_path, [tmp_path / "more.jsonl"], name="d", test_size="24").out)
    assert len(after) == 140 and not [i for i, s in before.items() if s == "train" and after[i] == "test"]
    # another seed, another split
    assert side(run(tmp_path, [path], name="e", seed=7, test_size="0.3").out) != side(a)


def test_group_by_field(tmp_path):
    rows = [{**r, "topic": r["group"], "group": r["id"]} for r in make_rows(30, per_group=3)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    out = run(tmp_path, [path], group_by="topic", test_size="0.3").out
    train, test = read(out / "train.jsonl"), read(out / "test.jsonl")
    assert {r["topic"] for r in train}.isdisjoint({r["topic"] for r in test})
    assert all(r["group"] == r["topic"] for r in train + test)
    with pytest.raises(InputError, match="in.jsonl:1: nope: missing"):
        run(tmp_path, [path], name="x", group_by="nope")


def test_bundled_sample_file(tmp_path, repo_root, validator):
    sample = repo_root / "data" / "sample_tc_responses.jsonl"
    assert sample.is_file(), (
        "data/sample_tc_responses.jsonl is missing: it is bundled data (scripts/build_sample_data.py)"
    )
    result = run(tmp_path, [sample], group_by="group", corrections="from-clean")
    rows = read(result.out / "train.jsonl") + read(result.out / "test.jsonl")
    assert len(rows) == sum(1 for line in sample.read_text().splitlines() if line.strip())
    assert result.summary["hallucinated"] > 0 and result.summary["test"] > 0
    for r in rows:
        validator.validate(r["verdict"])
