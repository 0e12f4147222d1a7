"""The planner's error band (plan/band.py): taken from the validation rows it lists, complete over the
published peaks of scripts/plan_points.yaml, and what `fits` is decided on (fast tier)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from mixtral_ft.plan.band import LEFT_OUT, ROWS, Band, band_for, run_kind
from mixtral_ft.plan.setup import TrainSetup

POINTS = Path(__file__).resolve().parents[1] / "scripts" / "plan_points.yaml"
NOT_PLANNED = {"fsdp_full_shard", "fsdp_full_shard_cpu_offload"}  # scripts/bench_plan.py: mixft runs no FSDP


@pytest.fixture(scope="module")
def points() -> dict[str, dict]:
    return {p["id"]: p for p in yaml.safe_load(POINTS.read_text(encoding="utf-8"))["points"]}


def _kind(point: dict) -> str:
    train = point["train"] | (point.get("plan_as") or {})
    return "4-bit" if train.get("load_in_4bit") else "8-bit" if train.get("load_in_8bit") else "16-bit"


def test_every_band_row_is_a_published_peak_of_its_kind(points):
    for kind, rows in ROWS.items():
        assert rows, f"{kind}: no validation rows"
        for pid in rows:
            assert pid in points, pid
            assert points[pid]["kind"] in ("measured", "boundary") and points[pid]["measured"]["peak"] is not None
            assert _kind(points[pid]) == kind, pid


def test_every_planned_published_peak_is_in_a_band_or_left_out_with_a_reason(points):
    counted = {pid for rows in ROWS.values() for pid in rows}
    for pid, p in points.items():
        if p["kind"] == "claim" or p["measured"]["peak"] is None or p["train"]["parallel"]["kind"] in NOT_PLANNED:
            continue
        assert (pid in counted) != (pid in LEFT_OUT), pid
    for pid, reason in LEFT_OUT.items():
        assert pid in points and len(reason) > 20, pid


def test_a_band_is_the_largest_shortfall_of_its_rows_rounded_up():
    band = Band("4-bit", (("a", -12.3), ("b", 4.0), ("c", -3.0)))
    assert band.pct == 13.0 and band.worst == "a"
    assert band.high(38.5) == pytest.approx(38.5 * 1.13)
    assert "largest shortfall -12.3% (a)" in band.source()
    assert Band("16-bit", (("a", 2.0),)).pct == 0.0
    for kind, rows in ROWS.items():
        expected = math.ceil(max([0.0, *(-e for e in rows.values())]) - 1e-9)
        assert (
            band_for(TrainSetup(base_model="m", load_in_4bit=kind == "4-bit", load_in_8bit=kind == "8-bit")).pct
            == expected
        )


def test_the_kind_of_a_run_is_how_its_base_weights_are_stored():
    assert run_kind(TrainSetup(base_model="m", load_in_4bit=True)) == "4-bit"
    assert run_kind(TrainSetup(base_model="m", load_in_4bit=False, load_in_8bit=True)) == "8-bit"
    assert run_kind(TrainSetup(base_model="m", adapter="lora", load_in_4bit=False)) == "16-bit"
