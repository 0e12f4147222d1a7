"""The published measurements the planner is validated against (scripts/plan_points.yaml, issue 11 item 5).

Fast tier: the file loads and passes its schema check, holds what the issue asks for (10+ published
measurements, the reference point, dense models and Mixtral), and the checker names the point and
field of each kind of mistake. Slow tier: every model's config.json facts build the real transformers
class with the parameter count recorded in the file.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _bench():
    """scripts/bench_plan.py as a module (scripts/ is not a package)."""
    if "bench_plan" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_plan", REPO / "scripts" / "bench_plan.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_plan"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_plan"]


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((REPO / "scripts" / "plan_points.yaml").read_text(encoding="utf-8"))


def test_shipped_points_pass_the_schema(raw):
    assert _bench().validate(raw) == []
    data = _bench().load_points()
    assert len(data["points"]) == len(raw["points"])


def test_points_cover_what_the_issue_asks(raw):
    points = raw["points"]
    measured = [p for p in points if p["kind"] == "measured"]
    assert len(measured) >= 10, "issue 11: at least 10 published measurements"
    known = [p for p in measured if p["fully_known"] and p["measured"]["peak"] is not None]
    assert len(known) >= 10, "the median error needs 10+ fully known measured peaks"
    models = {name: m["config"]["model_type"] for name, m in raw["models"].items()}
    assert any(models[p["model"]] == "mixtral" for p in points)
    assert sum(models[p["model"]] != "mixtral" for p in points) >= 10, "the plan must handle dense models"
    reference = [p for p in points if p.get("reference")]
    assert any(
        p["measured"]["peak_gib"] == 48.0 and p["train"]["micro_batch_size"] == 4 and p["train"]["sequence_len"] == 4096
        for p in reference
    ), "the report's ~48 GB at 4 x 4096"
    assert {p["kind"] for p in points} == {"measured", "boundary", "claim"}
    assert any(p["measured"]["fits"] is False for p in points), "at least one out-of-memory verdict"


def test_every_point_says_where_it_comes_from(raw):
    for p in raw["points"]:
        src = p["source"]
        assert src["url"].startswith(("https://", "/work/shared/reference/")), p["id"]
        assert len(src["where"]) > 20, f"{p['id']}: say which line, table or comment"


def test_fully_known_points_give_the_planner_every_input(raw):
    for p in raw["points"]:
        if not p["fully_known"]:
            continue
        t = p["train"]
        assert not p.get("assumed"), p["id"]
        assert t["adapter"] in ("lora", "qlora") and t["lora_r"] and t["optimizer"], p["id"]
        assert t.get("lora_target_modules") or t.get("lora_target_linear"), p["id"]
        assert isinstance(t["gradient_checkpointing"], bool), p["id"]
        assert t["tokens_per_micro_batch"] == t["micro_batch_size"] * t["sequence_len"], p["id"]


def _mutated(raw, index, edit):
    data = copy.deepcopy(raw)
    edit(data["points"][index])
    return _bench().validate(data)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda p: p.pop("source"), "source: needs title, url and where"),
        (lambda p: p["source"].pop("where"), "source: needs title, url and where"),
        (lambda p: p.update(kind="rumour"), "kind: 'rumour' is not one of"),
        (lambda p: p.update(model="gpt-5"), "model: 'gpt-5' is not under models:"),
        (lambda p: p["train"].pop("optimizer"), "train.optimizer: missing"),
        (lambda p: p["train"].update(tokens_per_micro_batch=1), "is not micro_batch_size x sequence_len"),
        (lambda p: p["train"].update(parallel={"kind": "tensor"}), "train.parallel: needs kind"),
        (lambda p: p["measured"].update(peak_gib=1.0), "measured.peak_gib: 1.0 is not"),
        (lambda p: p["measured"].update(metric="vibes"), "measured.metric: 'vibes'"),
        (lambda p: p["measured"].update(gpu_memory_gib=None), "a fits verdict needs the card's memory"),
        (lambda p: p.update(assumed=["optimizer"]), "a fully known point assumes nothing"),
    ],
)
def test_the_checker_names_the_point_and_field(raw, edit, expected):
    index = next(i for i, p in enumerate(raw["points"]) if p["id"] == "fsdp-qlora-llama2-7b-qlora-ddp-bs8")
    problems = _mutated(raw, index, edit)
    assert any(pr.startswith("fsdp-qlora-llama2-7b-qlora-ddp-bs8: ") and expected in pr for pr in problems), problems


def test_a_partial_point_must_list_its_unknowns(raw):
    index = next(i for i, p in enumerate(raw["points"]) if not p["fully_known"])
    problems = _mutated(raw, index, lambda p: p.update(unknowns=[]))
    assert any("unknowns: a point that is not fully known says what is unknown" in pr for pr in problems)


def test_load_points_reports_every_problem_at_once(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["points"][0].pop("kind")
    data["points"][1]["train"].pop("sequence_len")
    path = tmp_path / "points.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(_bench().PointsError) as err:
        _bench().load_points(path)
    assert len(err.value.problems) >= 2
    assert str(path) in str(err.value)


def test_model_configs_are_written_for_the_planner(tmp_path, raw):
    paths = _bench().write_model_configs(raw["models"], tmp_path)
    assert set(paths) == set(raw["models"])
    point = next(p for p in raw["points"] if p["id"] == "fsdp-qlora-llama2-7b-qlora-ddp-bs8")
    cfg = _bench().axolotl_config(point, paths[point["model"]])
    assert cfg["base_model"] == str(paths["llama-2-7b"])
    assert not set(_bench().EXTRA_TRAIN_KEYS) & set(cfg)
    assert _bench().world_size(point) == 2


def _row(**kw):
    base = {
        "id": "p",
        "source": "s",
        "url": "https://x",
        "kind": "measured",
        "fully_known": True,
        "reference": False,
        "model": "m",
        "tokens": 1024,
        "gpu": "g",
        "gpu_memory_gib": 24.0,
        "measured_gib": 20.0,
        "metric": "max_memory_reserved",
        "measured_fits": True,
    }
    base.update(kw)
    return _bench().Row(**base)


def test_rows_compare_peak_and_verdict():
    r = _row(planned_gib=23.0, planned_fits=True)
    assert r.error_pct == pytest.approx(15.0) and r.verdict == "right" and r.in_median
    assert _row(planned_gib=25.0, planned_fits=False).verdict == "wrong"
    assert _row(measured_fits=None, planned_gib=21.0, planned_fits=True).verdict == "n/a"
    assert not _row(kind="claim", planned_gib=21.0).in_median
    assert not _row(fully_known=False, planned_gib=21.0).in_median
    assert _row(planned_gib=None, not_planned="FSDP").error_pct is None


def test_summary_takes_the_median_over_fully_known_measured_points_only():
    rows = [
        _row(id="a", planned_gib=22.0, planned_fits=True),  # +10%
        _row(id="b", planned_gib=16.0, planned_fits=True),  # -20%
        _row(id="c", planned_gib=21.0, planned_fits=True),  # +5%
        _row(id="d", kind="claim", planned_gib=60.0, planned_fits=False),  # wrong verdict, not in the median
        _row(id="e", planned_gib=None, not_planned="FSDP"),
    ]
    s = _bench().summarize(rows)
    assert s["fully_known_measured"] == 3 and s["median_abs_error_pct"] == 10.0
    assert s["within_target"] == 2 and s["verdicts_wrong"] == ["d"] and not s["targets_met"]
    assert s["not_planned"] == {"e": "FSDP"}
    assert _bench().summarize(rows[:1] + rows[2:3])["targets_met"]
    table = _bench().render_markdown(rows, s)
    assert "median absolute error 10.0%" in table and "not planned" in table and "| [d](https://x) | claim |" in table


@pytest.mark.slow
def test_model_configs_build_the_real_classes_with_the_recorded_size(raw):
    torch = pytest.importorskip("torch")
    from transformers import AutoConfig, AutoModelForCausalLM

    for name, model in raw["models"].items():
        cfg = dict(model["config"])
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        with torch.device("meta"):
            built = AutoModelForCausalLM.from_config(config)
        billions = sum(p.numel() for p in built.parameters()) / 1e9
        assert billions == pytest.approx(model["params_b"], abs=0.001), name


@pytest.mark.slow
def test_bench_plan_runs_end_to_end_on_two_points(tmp_path):
    """The script plans two published points from a cold cache and writes the table, results and manifest."""
    import json
    import os
    import subprocess

    ids = "axolotl-openllama3b-qlora,fsdp-qlora-llama2-7b-qlora-ddp-bs8"
    env = dict(os.environ, MIXFT_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_plan.py"), "--only", ids, "--out", str(tmp_path / "out")],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["id"]: r for r in results["rows"]}
    assert set(rows) == set(ids.split(","))
    for r in rows.values():
        assert r["planned_gib"] > 0 and r["planner_error"] is None
        assert r["parts_gib"]["activations"] > 0 and r["parts_gib"]["lora_params"] > 0
        assert r["compared_gib"] == pytest.approx(r["planned_gib"] + r["counter_offset_gib"])
        expected = 100 * (r["compared_gib"] - r["measured_gib"]) / r["measured_gib"]
        assert r["error_pct"] == pytest.approx(expected, abs=0.05)
    fsdp = rows["fsdp-qlora-llama2-7b-qlora-ddp-bs8"]
    assert fsdp["verdict"] in ("right", "wrong") and fsdp["in_median"]
    assert fsdp["counter_offset_gib"] < 0  # a reserved reading: the plan less the CUDA context
    assert rows["axolotl-openllama3b-qlora"]["verdict"] == "n/a"  # the source names no card
    summary = results["summary"]
    assert summary["fully_known_measured"] == 2 and summary["median_abs_error_pct"] is not None
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| point | kind |" in table and "median absolute error" in table
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["points_file"]["sha256"] and manifest["environment"]["packages"]
    assert "--only" in manifest["command"]


def test_the_plan_is_read_on_the_counter_the_source_used():
    from mixtral_ft.plan.training import ALLOCATOR_RESERVE_GIB, CUDA_CONTEXT_GIB

    offset = _bench().counter_offset
    assert offset("max_memory_allocated") == -(CUDA_CONTEXT_GIB + ALLOCATOR_RESERVE_GIB)
    assert offset("max_memory_reserved") == -CUDA_CONTEXT_GIB
    assert offset("unstated") == offset("nvidia-smi") == offset("capacity") == 0.0
    row = _row(planned_gib=22.6, planned_fits=True, counter_offset_gib=-0.6)
    assert row.compared_gib == pytest.approx(22.0) and row.error_pct == pytest.approx(10.0)
