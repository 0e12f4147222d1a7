"""`mixft label sample|export|import` without a server, on a real Label Studio export.

tests/data/label/export.json was captured once from Label Studio 1.23.2 (tests/data/label/capture.py
says how): 10 responses sampled from population.jsonl (seed 3) and exported with judge.jsonl's
verdicts as pre-annotations; alice labeled q02 (adding a span after an emoji) and q00 in the real
editor and skipped q11; carol labeled q02, q00 (clean: a disagreement with alice), q03 and q10
through the SDK. Task ids 1-10 follow the sample order; alice is user 1, carol user 2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from support.label_sample import label_sample

DATA = Path(__file__).resolve().parent / "data" / "label"
EXPORT = DATA / "export.json"
SAMPLE_ORDER = ["q11", "q03", "q10", "q07", "q08", "q06", "q02", "q01", "q00", "q04"]


def rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in rows(path)}


@pytest.fixture
def made(tmp_path):
    """The sample and the tasks the captured export was made from."""
    assert label_sample(tmp_path / "sample") == 0
    assert (
        main(
            [
                "label",
                "export",
                str(tmp_path / "sample"),
                "--predictions",
                str(DATA / "judge.jsonl"),
                "--out",
                str(tmp_path / "tasks"),
            ]
        )
        == 0
    )
    return tmp_path


def run_import(made, *extra: str, export: Path = EXPORT, out: str = "gold.jsonl") -> int:
    return main(["label", "import", str(export), "--sample", str(made / "sample"), "--out", str(made / out), *extra])


# ---------------------------------------------------------------- sample


def test_sample_is_seeded_order_free_nested_and_recorded(tmp_path, capsys):
    population = rows(DATA / "population.jsonl")
    shuffled = tmp_path / "shuffled.jsonl"
    random.Random(1).shuffle(population)
    shuffled.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in population), encoding="utf-8")
    assert label_sample(tmp_path / "a") == 0
    assert main(["label", "sample", str(shuffled), "--n", "10", "--seed", "3", "--out", str(tmp_path / "b")]) == 0
    assert main(["label", "sample", str(shuffled), "--n", "4", "--seed", "3", "--out", str(tmp_path / "c")]) == 0
    a, b, c = ([r["id"] for r in rows(tmp_path / d / "sample.jsonl")] for d in "abc")
    assert a == b == SAMPLE_ORDER and c == a[:4]  # the same population in any order; a smaller n is a prefix
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["kind"] == "label-sample" and manifest["settings"]["seed"] == 3 and manifest["settings"]["n"] == 10
    assert manifest["inputs"][0]["role"] == "population" and len(manifest["inputs"][0]["sha256"]) == 64
    other = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["population_ids_sha256"] == other["population_ids_sha256"]  # same ids, other bytes
    assert manifest["inputs"][0]["sha256"] != other["inputs"][0]["sha256"]
    assert "sampled 10 of 12" in capsys.readouterr().out


def test_sample_refuses_more_than_the_population_and_bad_rows(tmp_path, capsys):
    assert main(["label", "sample", str(DATA / "population.jsonl"), "--n", "13", "--out", str(tmp_path / "s")]) == 2
    assert "larger than the population" in capsys.readouterr().err and not (tmp_path / "s").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "context": "c", "question": "q", "response": "r"}\n{"id": "b", "context": "c", "question": "q"}\n'
    )
    assert main(["label", "sample", str(bad), "--n", "1", "--out", str(tmp_path / "s")]) == 2
    assert f"{bad}:2: response: missing or not a string" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_target_width_picks_a_size_by_the_simulation(tmp_path, capsys):
    from mixtral_ft.label.size import corrected_width, gold_size_for_width

    population = tmp_path / "pop.jsonl"
    population.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "context": "c", "question": "q", "response": "r"}) + "\n" for i in range(3000)
        )
    )
    args = [
        "label",
        "sample",
        str(population),
        "--target-width",
        "12",
        "--sensitivity",
        "0.85",
        "--specificity",
        "0.95",
    ]
    assert main([*args, "--expected-rate", "0.10", "--out", str(tmp_path / "s")]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    target = manifest["target"]
    n = manifest["settings"]["n"]
    assert target["n"] == n and target["mean_width"] <= 0.12 and target["responses"] == 3000
    assert "gold-set size for a 12-point interval" in capsys.readouterr().err
    # The size found is the smallest that reaches the width (by the same simulation, same seed).
    import random as _random

    below, _ = corrected_width(
        _random.Random(42), sensitivity=0.85, specificity=0.95, rate=0.10, responses=3000, gold=n - 1
    )
    assert below is None or below > 0.12
    # A width the judged responses alone cannot reach is refused, saying what they allow.
    with pytest.raises(Exception, match="judged responses give"):
        gold_size_for_width(0.01, sensitivity=0.85, specificity=0.95, rate=0.05, responses=300, limit=3000)


def test_the_simulation_gives_the_documented_widths():
    """docs/evaluation.md's table of gold-set sizes comes from label.size.corrected_width."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "sim_correction_coverage.py"
    spec = importlib.util.spec_from_file_location("sim_correction_coverage_label", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    widths = [round(100 * r["mean_width"], 1) for r in module.widths(20241)]
    assert widths[:7] == [13.5, 11.5, 10.4, 9.3, 8.9, 8.4, 8.0]
    assert widths[7:14] == [21.1, 17.0, 14.8, 13.0, 12.3, 12.0, 11.3]


# ---------------------------------------------------------------- export


def test_export_writes_config_and_tasks_with_located_pre_annotations(made, capsys):
    from mixtral_ft.label.config import config_problems

    xml = (made / "tasks" / "config.xml").read_text()
    assert config_problems(xml) == []
    tasks = json.loads((made / "tasks" / "tasks.json").read_text())
    assert [t["data"]["item_id"] for t in tasks] == SAMPLE_ORDER
    task = {t["data"]["item_id"]: t for t in tasks}
    assert "predictions" not in task["q11"]  # its verdict did not parse
    assert task["q02"]["data"]["context"] == "The library has 3 floors.\n\nA cafe is on the ground floor."
    (region, explanation) = [r for r in task["q02"]["predictions"][0]["result"] if r["from_name"].startswith("mistake")]
    response = task["q02"]["data"]["response"]
    assert response[region["value"]["start"] : region["value"]["end"]] == "top floor"  # code points, before the emoji
    assert explanation["id"] == region["id"] and explanation["value"]["text"] == ["The cafe is on the ground floor."]
    assert (
        task["q02"]["predictions"][0]["score"] == 0.9 and task["q02"]["predictions"][0]["model_version"] == "judge-demo"
    )
    # A span whose text is not in the response is reported, not dropped.
    assert "in every shop" in task["q08"]["data"]["judge_notes"]
    manifest = json.loads((made / "tasks" / "manifest.json").read_text())
    assert manifest["summary"]["unlocated"] == [{"id": "q08", "text": "in every shop", "type": "Subtle Baseless Info"}]
    assert manifest["summary"]["without_prediction"]["unparsed"] == 1
    capsys.readouterr()
    assert (
        main(
            [
                "label",
                "export",
                str(made / "sample"),
                "--predictions",
                str(DATA / "judge.jsonl"),
                "--out",
                str(made / "again"),
            ]
        )
        == 0
    )
    assert "not found in 'q08': 'in every shop'" in capsys.readouterr().out
    assert (made / "again" / "tasks.json").read_bytes() == (made / "tasks" / "tasks.json").read_bytes()


def test_export_refuses_a_bad_judgement_and_writes_nothing(made, capsys):
    bad = made / "judge.jsonl"
    lines = (DATA / "judge.jsonl").read_text().splitlines()
    row = json.loads(lines[3])
    row["verdict"]["groundedness"]["mistake"] = "yes"
    bad.write_text("\n".join([*lines[:3], json.dumps(row), *lines[4:]]) + "\n")
    assert main(["label", "export", str(made / "sample"), "--predictions", str(bad), "--out", str(made / "x")]) == 2
    assert f"{bad}:4: verdict: groundedness.mistake: expected a boolean" in capsys.readouterr().err
    assert not (made / "x").exists()


# ---------------------------------------------------------------- import


def test_import_turns_the_export_into_verdicts(made, capsys):
    assert run_import(made) == 0
    out = capsys.readouterr().out
    gold = by_id(made / "gold.jsonl")
    assert list(gold) == ["q03", "q10", "q02"]  # sample order; q00: alice and carol disagree, a tie
    q02 = gold["q02"]
    assert q02["verdict"] == {
        "relevance": {"mistake": False, "explanation": ""},
        "groundedness": {
            "mistake": True,
            "mistakes": [
                {"text": "top floor", "type": "Evident Conflict", "explanation": "The cafe is on the ground floor."},
                {
                    "text": "next to the roof garden",
                    "type": "Evident Baseless Info",
                    "explanation": "No roof garden in the context.",
                },
            ],
        },
        "corrected_response": None,
    }
    a = q02["annotation"]
    assert (a["annotator"], a["annotator_id"], a["task_id"], a["resolved"], a["votes"]) == ("user 1", 1, 7, "agreed", 2)
    assert a["created_at"].startswith("20") and a["lead_time_s"] > 0 and a["prediction_id"] is not None
    assert gold["q10"]["verdict"]["corrected_response"] == "The hotel has 40 rooms and a spa."
    assert (
        gold["q10"]["verdict"]["groundedness"]["mistakes"][0]["explanation"]
        == "The context lists 40 rooms and a spa only."
    )
    assert gold["q03"]["verdict"]["groundedness"] == {"mistake": False, "mistakes": []}
    # The sampled row is copied whole (what prepare tc and judge need), with the human verdict only.
    assert {"context", "question", "response", "source", "model", "group"} <= set(q02) and "hallucinated" not in q02

    manifest = json.loads((made / "gold.jsonl.manifest.json").read_text())
    s = manifest["summary"]
    assert manifest["kind"] == "label-import" and manifest["settings"] == {"resolve": "majority"}
    assert (s["tasks"], s["annotations"], s["annotations_cancelled"], s["gold"]) == (10, 6, 1, 3)
    assert s["left_out"] == [{"id": "q00", "why": "tie (majority)"}]
    assert [(d["id"], d["fields"]) for d in s["disagreements"]] == [("q00", ["hallucinated"])]
    assert s["tasks_skipped"] == [{"task": 1, "item_id": "q11", "skipped_by": ["user 1"]}]
    assert sorted(t["item_id"] for t in s["tasks_unlabeled"]) == ["q01", "q04", "q06", "q07", "q08"]
    assert s["sample_items_not_in_export"] == [] and s["tasks_not_in_sample"] == []
    # Every annotation is kept, whether it made the gold file or not.
    every = rows(made / "gold.annotations.jsonl")
    assert len(every) == 6 and sum(r["gold"] for r in every) == 3 and all(r["vote"] for r in every)
    assert "1 task(s) skipped by every annotator: 'q11'" in out and "'q00' (hallucinated)" in out


def test_agreement_figures(made):
    assert run_import(made) == 0
    (pair,) = json.loads((made / "gold.jsonl.manifest.json").read_text())["summary"]["agreement"]
    assert pair["annotators"] == ["user 1", "user 2"] and pair["items"] == 2
    h = pair["hallucinated"]
    assert h["table"] == {"both_yes": 1, "only_first": 1, "only_second": 0, "both_no": 0}
    assert h["kappa"]["value"] == pytest.approx(0.0) and h["kappa"]["ci"]["method"] == "donner-eliasziw-gof"
    assert h["kappa"]["ci"]["low"] < 0 < h["kappa"]["ci"]["high"]
    assert (
        pair["irrelevant"]["kappa"]["value"] is None
        and "same answer to all 2 items" in pair["irrelevant"]["kappa"]["note"]
    )
    m = pair["mistakes"]
    assert m["items_with_spans"] == 2 and m["spans"] == [3, 1]
    assert m["char_iou"] == pytest.approx(9 / 37) and m["type_agreement"] == 1.0 and m["span_f1"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("majority", ["q03", "q10", "q02"]), ("strict", ["q03", "q10", "q02"]), ("first", ["q03", "q10", "q02", "q00"])],
)
def test_resolve_rules(made, rule, expected):
    assert run_import(made, "--resolve", rule) == 0
    gold = by_id(made / "gold.jsonl")
    assert list(gold) == expected
    if rule == "first":  # the earlier annotation of q00: alice's, the judge's verdict she accepted
        assert gold["q00"]["annotation"]["annotator"] == "user 1" and gold["q00"]["verdict"]["groundedness"]["mistake"]


def test_a_majority_of_three(made):
    export = json.loads(EXPORT.read_text())
    q00 = next(t for t in export if t["data"]["item_id"] == "q00")
    carol = next(a for a in q00["annotations"] if a["completed_by"] == 2)
    q00["annotations"].append({**carol, "id": 999, "completed_by": 3, "created_at": "2099-01-01T00:00:00Z"})
    path = made / "three.json"
    path.write_text(json.dumps(export))
    assert run_import(made, export=path) == 0
    gold = by_id(made / "gold.jsonl")
    assert gold["q00"]["annotation"]["annotator"] == "user 2" and gold["q00"]["annotation"]["resolved"] == "majority"
    assert gold["q00"]["verdict"]["groundedness"]["mistake"] is False


def test_emails_from_an_expanded_export_and_items_not_in_the_sample(made, capsys):
    export = json.loads(EXPORT.read_text())
    for task in export:
        for a in task["annotations"]:
            a["completed_by"] = {"id": a["completed_by"], "email": f"person{a['completed_by']}@example.com"}
    stranger = json.loads(json.dumps(export[1]))
    stranger["id"], stranger["data"]["item_id"] = 77, "zz"
    export.append(stranger)
    path = made / "emails.json"
    path.write_text(json.dumps(export))
    assert run_import(made, export=path) == 0
    gold = by_id(made / "gold.jsonl")
    assert gold["q02"]["annotation"]["annotator"] == "person1@example.com"
    summary = json.loads((made / "gold.jsonl.manifest.json").read_text())["summary"]
    assert summary["tasks_not_in_sample"] == [{"task": 77, "item_id": "zz"}]
    assert "1 task(s) whose item is not in the sample: 'zz'" in capsys.readouterr().out


def _mutate(export: list, item: str, change) -> list:
    task = next(t for t in export if t["data"]["item_id"] == item)
    change(task)
    return export


def _first_result(name: str):
    def pick(task):
        return next(r for r in task["annotations"][0]["result"] if r["from_name"] == name)

    return pick


MALFORMED = {
    "outside": ("q02", lambda t: _first_result("mistakes")(t)["value"].update(start=40, end=99), "task 7: annotation"),
    "text": (
        "q02",
        lambda t: _first_result("mistakes")(t)["value"].update(text="toP floor"),
        "is not the response's text",
    ),
    "config": (
        "q03",
        lambda t: t["annotations"][0]["result"][0].update(from_name="sentiment"),
        "labeling config does not match",
    ),
    "label": ("q02", lambda t: _first_result("mistakes")(t)["value"].update(labels=["Typo"]), "value.labels ['Typo']"),
    "clean": (
        "q10",
        lambda t: _first_result("groundedness")(t)["value"].update(choices=["Clean"]),
        "chose 'Clean' but labeled 1",
    ),
    "no choice": (
        "q03",
        lambda t: t["annotations"][0].update(
            result=[r for r in t["annotations"][0]["result"] if r["from_name"] != "relevance"]
        ),
        "no relevance choice",
    ),
    "data": ("q03", lambda t: t["data"].update(response="Something else."), "data.response: differs from the sample's"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_exports_are_refused_and_nothing_is_written(made, capsys, case):
    item, change, message = MALFORMED[case]
    path = made / "bad.json"
    path.write_text(json.dumps(_mutate(json.loads(EXPORT.read_text()), item, change)))
    assert run_import(made, export=path) == 2
    err = capsys.readouterr().err
    assert f"{path}:task " in err and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not any(p.name.startswith("gold") for p in made.iterdir())


def test_not_an_export(made, capsys):
    path = made / "bad.json"
    for text, message in (
        ("[{]", "invalid JSON at line 1 column 3"),
        ('{"tasks": []}', "expected Label Studio's JSON export"),
    ):
        path.write_text(text)
        assert run_import(made, export=path) == 2
        assert f"{path}: {message}" in capsys.readouterr().err
    assert not any(p.name.startswith("gold") for p in made.iterdir())


def test_existing_gold_is_kept_without_force(made, capsys):
    assert run_import(made) == 0
    before = (made / "gold.jsonl").read_bytes()
    assert run_import(made) == 2 and "use --force" in capsys.readouterr().err
    assert (made / "gold.jsonl").read_bytes() == before
    assert run_import(made, "--force", "--resolve", "first") == 0 and len(rows(made / "gold.jsonl")) == 4


# ---------------------------------------------------------------- agreement


def test_cohens_kappa_and_its_interval():
    from mixtral_ft.label.agreement import _gof, binary_agreement, kappa_interval

    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    k = binary_agreement(pairs)["kappa"]
    assert k["value"] == pytest.approx(0.4)  # p_o 0.7, p_e 0.5 * 0.6 + 0.5 * 0.4 = 0.5
    assert k["ci"]["low"] < k["common_rate_kappa"] < k["ci"]["high"]
    hat, low, high = kappa_interval(20, 15, 15)
    p = (2 * 20 + 15) / 100
    for limit in (low, high):  # the limits are where the goodness of fit reaches chi-square(1) at 95%
        assert _gof((20, 15, 15), p, limit) == pytest.approx(3.8415, abs=1e-3)
    # Perfect agreement on few items keeps a width; more items narrow it.
    _, low10, high10 = kappa_interval(5, 0, 5)
    _, low100, _ = kappa_interval(50, 0, 50)
    assert high10 == 1.0 and 0.3 < low10 < low100 < 1.0


def test_span_overlap():
    from mixtral_ft.label.agreement import Span, span_agreement

    a = (Span(0, 10, "Evident Conflict"), Span(20, 25, "Subtle Conflict"))
    b = (Span(5, 10, "Evident Conflict"),)
    m = span_agreement([(a, b), ((), ())])
    assert m["items_with_spans"] == 1 and m["char_iou"] == pytest.approx(5 / 15)
    assert m["type_agreement"] == 1.0 and m["span_f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert span_agreement([((), ())])["char_iou"] is None


# ---------------------------------------------------------------- the server route, without a server


def test_server_route_never_shows_the_token(made, capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    secret = "a-legacy-token-0123456789abcdef"
    args = [
        "label",
        "import",
        "--url",
        f"http://me:pw@127.0.0.1:{port}",
        "--project",
        "1",
        "--sample",
        str(made / "sample"),
    ]
    assert main([*args, "--out", str(made / "gold.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "set LABEL_STUDIO_API_KEY" in err and "pw" not in err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", secret)
    assert main([*args, "--out", str(made / "gold.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Label Studio at http://***@127.0.0.1" in err and secret not in err and ":pw@" not in err
    out = made / "pushed"
    assert main(["label", "export", str(made / "sample"), "--out", str(out), "--url", f"http://127.0.0.1:{port}"]) == 1
    assert secret not in capsys.readouterr().err and not out.exists()  # a refused push writes nothing
    # A token the SDK refuses before any request (a JWT without an expiry): one line, no token either.
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2VjcmV0"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", jwt)
    assert main([*args, "--out", str(made / "gold.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "refused to accept the API token: HTTP 401" in err and jwt not in err
    assert not any(p.name.startswith("gold") for p in made.iterdir())


def test_server_route_needs_the_sdk(made, capsys, monkeypatch):
    import sys

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "token")
    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)
    args = ["label", "import", "--url", "http://127.0.0.1:9", "--project", "1", "--sample", str(made / "sample")]
    assert main([*args, "--out", str(made / "gold.jsonl")]) == 3
    assert "pip install 'mixtral-ft[label]'" in capsys.readouterr().err


def test_cli_lists_the_commands_and_the_rules(capsys, monkeypatch):
    from mixtral_ft.cli.label_cmd import Resolve
    from mixtral_ft.label.importer import RESOLVE_RULES

    assert [r.value for r in Resolve] == list(RESOLVE_RULES)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["label", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("sample", "export", "import"))
    assert main(["label", "import", str(EXPORT), "--sample", "x", "--out", "y", "--resolve", "majorty"]) == 2
    assert "Did you mean 'majority'?" in capsys.readouterr().err
