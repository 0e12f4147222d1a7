"""The published measurements the planner is validated against (scripts/plan_points.yaml).

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
        assert src["url"].startswith(("https://", "$MIXFT_SHARED_DIR/reference/")), p["id"]  # no machine paths
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


def test_points_are_planned_with_the_checkpointing_their_stacks_ran(tmp_path, raw):
    """Every point ran on transformers 4.x, which (like Axolotl before 0.21) checkpointed reentrant unless told
    otherwise; the planner's own default is Axolotl 0.21's non-reentrant, so the points state theirs."""
    from mixtral_ft.plan.setup import setup_from_config

    paths = _bench().write_model_configs(raw["models"], tmp_path)
    for point in raw["points"]:
        assert str(point["transformers"]).startswith("4."), point["id"]
        setup = setup_from_config(_bench().axolotl_config(point, paths[point["model"]]))
        assert setup.checkpointing_mode in ("reentrant", "none"), point["id"]
    shipped = {"base_model": "m", "gradient_checkpointing": True, "sequence_len": 4096}
    assert setup_from_config(shipped).checkpointing_mode == "non-reentrant"  # utils/config/__init__.py:470-483
    assert setup_from_config({**shipped, "deepspeed": "deepspeed_configs/zero3_bf16.json"}).use_reentrant


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


def test_summary_checks_the_median_the_shortfalls_and_the_verdicts():
    rows = [
        _row(id="a", planned_gib=22.0, planned_fits=True),  # +10%
        _row(id="b", planned_gib=16.0, planned_fits=True),  # -20%: below -15%
        _row(id="c", planned_gib=19.0, planned_fits=True),  # -5%
        _row(id="d", kind="claim", planned_gib=60.0, planned_fits=False),  # wrong verdict, not in the median
        _row(id="e", planned_gib=None, not_planned="FSDP"),
    ]
    s = _bench().summarize(rows)
    assert s["fully_known_measured"] == 3 and s["median_signed_error_pct"] == -5.0
    assert s["median_abs_error_pct"] == 10.0 and s["fully_known_under_target"] == ["b"]
    assert s["verdicts_wrong"] == ["d"] and not s["targets_met"]
    assert s["not_planned"] == {"e": "FSDP"}
    assert _bench().summarize(rows[:1] + rows[2:3])["targets_met"]  # median +2.5%, no shortfall, no verdict wrong
    table = _bench().render_markdown(rows, s)
    assert "median signed error -5.0%" in table and "not planned" in table and "| [d](https://x) | claim |" in table


def test_the_length_trend_is_a_slope_per_doubling_and_a_rank_correlation():
    rising = [_row(id=str(i), row_tokens=1024 * 2**i, planned_gib=20.0 * (1 + i / 20)) for i in range(5)]
    t = _bench().length_trend(rising)
    assert t["rows"] == 5 and t["slope_pct_per_doubling"] == pytest.approx(5.0) and t["spearman"] == 1.0
    flat = [_row(id=str(i), row_tokens=1024 * 2**i, planned_gib=20.0 + (1 if i % 2 else -1)) for i in range(4)]
    assert abs(_bench().length_trend(flat)["spearman"]) < 0.5


def test_points_before_transformers_4_49_are_planned_with_that_loss(raw):
    bench = _bench()
    by_id = {p["id"]: p for p in raw["points"]}
    assert bench.transformers_version(by_id["unsloth-hf-fa2-llama31-8b-24gb-max5789"]) == (4, 47)
    assert bench.new_row(by_id["unsloth-hf-fa2-llama31-8b-24gb-max5789"], raw["models"]).legacy_loss
    assert not bench.new_row(by_id["axolotl-ministral-8b-qlora"], raw["models"]).legacy_loss
    assert bench.new_row(by_id["unsloth-hf-fa2-llama31-8b-24gb-max5789"], raw["models"]).casts == "trl"
    bad = copy.deepcopy(raw)
    bad["points"][0]["transformers"] = "four"
    bad["points"][1]["casts"] = "deepspeed"
    problems = bench.validate(bad)
    assert any("transformers: a version" in p for p in problems) and any("casts: 'deepspeed'" in p for p in problems)


def test_the_legacy_loss_copies_the_shifted_logits():
    """transformers before 4.49: the float32 logits and a contiguous copy of all but the last position."""
    torch = pytest.importorskip("torch")
    from mixtral_ft.plan.sim import MemoryTracker

    logits = torch.randn(1, 8, 5, dtype=torch.bfloat16)
    labels = torch.randint(0, 5, (1, 8))
    tracker = MemoryTracker(vocab_size=5, record=True)
    with tracker:
        loss = _bench().legacy_causal_lm_loss(logits, labels, 5)
    sizes = sorted(n for _, n in tracker.events if n)
    assert 8 * 5 * 4 in sizes and 7 * 5 * 4 in sizes  # the float32 upcast and the shifted copy
    assert torch.isfinite(loss)


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
    assert fsdp["verdict"] in ("right", "wrong") and fsdp["in_median"] and fsdp["legacy_loss"]
    assert fsdp["counter_offset_gib"] != 0  # a reserved reading: the replay's reserved peak, not the plan's peak
    assert fsdp["parts_gib"]["allocator"] > 0 and fsdp["planned_high_gib"] > fsdp["planned_gib"]
    assert rows["axolotl-openllama3b-qlora"]["verdict"] == "n/a"  # the source names no card
    summary = results["summary"]
    assert summary["fully_known_measured"] == 2 and summary["median_signed_error_pct"] is not None
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| point | kind |" in table and "median signed error" in table
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["points_file"]["sha256"] and manifest["environment"]["packages"]
    assert "--only" in manifest["command"]


def test_the_plan_is_read_on_the_counter_the_source_used():
    class Plan:
        peak_gib, allocated_peak_gib, reserved_peak_gib = 22.6, 20.0, 21.5

    on = _bench().on_counter
    assert on(Plan, "max_memory_allocated") == 20.0 and on(Plan, "max_memory_reserved") == 21.5
    # nvidia-smi (and the unstated "GB" readings taken for it): the reserved segments and the CUDA context
    assert on(Plan, "unstated") == on(Plan, "nvidia-smi") == pytest.approx(21.5 + 0.6)
    assert on(Plan, "capacity") == on(Plan, "estimate") == 22.6  # a card or an estimate: the peak itself
    row = _row(planned_gib=22.6, planned_fits=True, counter_offset_gib=-0.6)
    assert row.compared_gib == pytest.approx(22.0) and row.error_pct == pytest.approx(10.0)
