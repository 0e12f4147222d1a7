"""The labeling tests' recorded sample: `mixft label sample` of tests/data/label/population.jsonl with the
size and seed the captured Label Studio export was made from."""

from __future__ import annotations

from pathlib import Path

from mixtral_ft.cli.main import main

LABEL_DATA = Path(__file__).resolve().parents[1] / "data" / "label"


def label_sample(out: Path, population: Path = LABEL_DATA / "population.jsonl") -> int:
    """`mixft label sample POPULATION --n 10 --seed 3 --out OUT`; its exit status."""
    return main(["label", "sample", str(population), "--n", "10", "--seed", "3", "--out", str(out)])
