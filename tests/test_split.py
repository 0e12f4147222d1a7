"""Split properties: deterministic, order-independent, stable under additions, exact counts,
no group on both sides."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from mixtral_ft.errors import UsageError
from mixtral_ft.prepare.options import PrepareOptions
from mixtral_ft.prepare.pipeline import run_prepare
from mixtral_ft.prepare.readers import parse_input
from mixtral_ft.prepare.rg import RgTask
from mixtral_ft.prepare.split import SplitAssigner, TestSize, parse_test_size, split_key


def make_rows(n: int, start: int = 0, groups: int | None = None) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        row = {
            "id": f"q{i}",
            "question": f"What about item {i}?",
            "context": [f"Item {i} is blue.", "Shipping is free."],
            "answer": f"Item {i} is blue.",
        }
        if groups:
            row["article_id"] = f"kb-{i % groups}"
        rows.append(row)
    return rows


def run(tmp_path: Path, rows: list[dict], name: str, **kw) -> dict[str, list[dict]]:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / f"{name}-out"
    run_prepare(PrepareOptions(inputs=[parse_input(f"raw={src}")], out=out, **kw), RgTask())
    return {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "test")} | {
        "bytes": {s: (out / f"{s}.jsonl").read_bytes() for s in ("train", "test")}
    }


def ids(split: list[dict]) -> set[str]:
    return {r["id"] for r in split}


def test_parse_test_size():
    assert parse_test_size("300") == TestSize(count=300)
    assert parse_test_size("0.125") == TestSize(fraction=0.125)
    for bad in ("1.5", "0", "0.0", "-3", "abc"):
        with pytest.raises(UsageError):
            parse_test_size(bad)


def test_split_key_depends_on_seed_and_group_only():
    assert split_key("g:a", 1) == split_key("g:a", 1)
    assert split_key("g:a", 1) != split_key("g:a", 2)
    assert 0 <= split_key("g:b", 1) < 2**64


def test_assigner_count_takes_the_closest_prefix_of_groups():
    a = SplitAssigner(TestSize(count=5))
    sides = [a.assign(size) for size in [2, 2, 2, 1, 1]]
    # 2 -> 4 rows gets closer to 5; a third group (6) would not, so the prefix stops there
    assert sides == ["test", "test", "train", "train", "train"]
    assert (a.n_test, a.n_train) == (4, 4)
    b = SplitAssigner(TestSize(count=3))
    assert [b.assign(1) for _ in range(5)] == ["test"] * 3 + ["train"] * 2


def test_2400_rows_test_300_gives_exactly_2100_300(tmp_path):
    out = run(tmp_path, make_rows(2400), "a", test_size=TestSize(count=300))
    assert (len(out["train"]), len(out["test"])) == (2100, 300)
    assert not ids(out["train"]) & ids(out["test"])


def test_same_rows_in_any_order_give_identical_bytes(tmp_path):
    rows = make_rows(500, groups=40)
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    for kw in ({"test_size": TestSize(count=50)}, {"test_size": TestSize(fraction=0.2), "group_by": "article_id"}):
        a = run(tmp_path, rows, "ordered", **kw)
        b = run(tmp_path, shuffled, "shuffled", **kw)
        assert a["bytes"] == b["bytes"]
        for p in tmp_path.glob("*-out"):
            import shutil

            shutil.rmtree(p)


def test_seed_changes_the_split(tmp_path):
    a = run(tmp_path, make_rows(300), "s1", test_size=TestSize(count=30), seed=1)
    b = run(tmp_path, make_rows(300), "s2", test_size=TestSize(count=30), seed=2)
    assert ids(a["test"]) != ids(b["test"])


def test_default_fraction_reproduces_the_report_split(tmp_path):
    """The default --test-size 0.125 takes exactly ceil(0.125 x rows): 2,400 rows -> 2,100 / 300."""
    out = run(tmp_path, make_rows(2400), "default")
    assert (len(out["train"]), len(out["test"])) == (2100, 300)
    assert TestSize(fraction=0.1).target(300) == 30 and TestSize(fraction=0.125).target(324) == 41


def test_adding_rows_with_a_fraction_keeps_the_order_and_moves_rows_only_at_the_cut(tmp_path):
    before = run(tmp_path, make_rows(1000), "before", test_size=TestSize(fraction=0.1))
    after = run(tmp_path, make_rows(1000) + make_rows(500, start=1000), "after", test_size=TestSize(fraction=0.1))
    assert (len(before["test"]), len(after["test"])) == (100, 150)
    old_order = [r["id"] for r in before["test"] + before["train"]]
    old = set(old_order)
    new_order = [r["id"] for r in after["test"] + after["train"] if r["id"] in old]
    assert new_order == old_order  # existing rows keep their seeded order
    still_test = [i for i in new_order if i in ids(after["test"])]
    assert still_test == old_order[: len(still_test)]  # the test set is a prefix of that order


def test_adding_rows_with_a_count_only_moves_test_rows_to_train(tmp_path):
    before = run(tmp_path, make_rows(1000), "before", test_size=TestSize(count=100))
    after = run(tmp_path, make_rows(1000) + make_rows(300, start=1000), "after", test_size=TestSize(count=100))
    assert len(after["test"]) == 100
    assert not ids(before["train"]) & ids(after["test"])  # never train -> test
    assert ids(after["test"]) & ids(before["test"])  # most of the old test set stays


def test_groups_never_cross_the_split_and_count_is_close(tmp_path):
    out = run(tmp_path, make_rows(1000, groups=97), "g", test_size=TestSize(count=150), group_by="article_id")
    train_groups = {r["group"] for r in out["train"]}
    test_groups = {r["group"] for r in out["test"]}
    assert not train_groups & test_groups
    assert len(train_groups | test_groups) == 97
    sizes = Counter(r["group"] for r in out["train"] + out["test"])
    assert abs(len(out["test"]) - 150) <= max(sizes.values()) // 2 + 1
    assert all(r["group"].startswith("kb-") for r in out["test"])


def test_output_is_shuffled_not_input_order(tmp_path):
    out = run(tmp_path, make_rows(200), "o", test_size=TestSize(count=20))
    order = [int(r["id"][1:]) for r in out["train"]]
    assert order != sorted(order)


def test_count_larger_than_data_is_refused(tmp_path):
    with pytest.raises(UsageError, match="leaves no training rows"):
        run(tmp_path, make_rows(10), "tiny", test_size=TestSize(count=10))
    assert not (tmp_path / "tiny-out").exists()


def test_a_split_that_leaves_no_training_group_is_refused(tmp_path):
    rows = make_rows(10, groups=2)  # two groups of 5: a target of 9 is closest with both in test
    with pytest.raises(UsageError, match="puts every group in test"):
        run(tmp_path, rows, "grouped", test_size=TestSize(count=9), group_by="article_id")
    assert not (tmp_path / "grouped-out").exists()
