"""What a ``prepare`` run reports: the tallies of the write pass (``Tally``), the result a
command prints (``PrepareResult``), and the pieces of the printed summary both tasks use (the
preview, tables of rows per source or model, shares); each task's ``format_summary`` lays them out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.prepare.split import TestSize

SIDES = ("train", "test")
_BATCH = 2000  # rows gathered before they are folded into counters


class Tally:
    """Rows written per side and per key of each table (``tables``: ``source``, and the task's
    own, e.g. ``model``), with the task's own per-row ``counts`` summed beside them, and groups
    per side. Rows are gathered in batches and folded (``Counter`` counts a list in C)."""

    def __init__(self, tables: Sequence[str] = ("source",), counts: Sequence[str] = ()):
        self.tables = tuple(tables)
        self.count_names = tuple(counts)
        self.groups: Counter[str] = Counter()  # side -> groups with a row there
        self._seen: Counter[tuple[str, tuple[Any, ...], tuple[int, ...]]] = Counter()
        self._batch: list[tuple[str, tuple[Any, ...], tuple[int, ...]]] = []

    def add_group(self, side: str, rows: list[tuple[tuple[Any, ...], tuple[int, ...]]]) -> None:
        """A group's rows written to ``side``: each one's key in each table, and its counts."""
        self.groups[side] += 1
        self._batch.extend((side, keys, counts) for keys, counts in rows)
        if len(self._batch) >= _BATCH:
            self._fold()

    def _fold(self) -> None:
        self._seen.update(self._batch)
        self._batch.clear()

    def table(self, name: str, counts: Sequence[str] = ()) -> dict[Any, dict[str, Any]]:
        """``{key: {"rows", "train", "test", *counts}}`` for table ``name``."""
        self._fold()
        i = self.tables.index(name)
        picked = [(c, self.count_names.index(c)) for c in counts]
        out: dict[Any, dict[str, Any]] = {}
        for (side, keys, row_counts), n in self._seen.items():
            entry = out.get(keys[i])
            if entry is None:
                entry = out[keys[i]] = {"rows": 0, "train": 0, "test": 0, **{c: 0 for c in counts}}
            entry["rows"] += n
            entry[side] += n
            for c, j in picked:
                entry[c] += row_counts[j] * n
        return out

    def totals(self, side: str | None = None) -> dict[str, int]:
        """Each count summed over the rows (of ``side``, or of both)."""
        self._fold()
        out = dict.fromkeys(self.count_names, 0)
        for (row_side, _keys, row_counts), n in self._seen.items():
            if side is None or row_side == side:
                for c, v in zip(self.count_names, row_counts):
                    out[c] += v * n
        return out


@dataclass
class PrepareResult:
    """What a ``prepare`` run did, for its command to print."""

    out: Path
    counts: dict[str, Any]  # the manifest's summary
    summary: dict[str, Any]  # the task's summary (RG: per source; TC: summary.json)
    lengths: dict[str, Any]  # ``LengthReport.to_json()``
    test_size: TestSize
    seed: int
    group_by: str | None = None
    preview: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # problems of the rows --skip-invalid left out (capped)


def share(n: int, d: int) -> float | None:
    """``n / d`` to 4 places; None when ``d`` is 0."""
    return round(n / d, 4) if d else None


TRAINED_START, TRAINED_END = "[TRAINED]", "[/TRAINED]"


def format_preview(examples: list[dict[str, Any]], color: bool = False, eos: str = "<EOS>") -> str:
    """Formatted examples with the trained part (response + EOS) marked: green when ``color``,
    else between ``[TRAINED]`` and ``[/TRAINED]``."""
    blocks = []
    for i, ex in enumerate(examples, 1):
        trained = ex["response"] + eos
        mark = f"\x1b[32m{trained}\x1b[0m" if color else f"{TRAINED_START}{trained}{TRAINED_END}"
        blocks.append(
            f"--- example {i} ({ex['split']}, id {ex['id']}, source {ex['source']}) ---\n{ex['prompt']}{mark}"
        )
    legend = (
        "(green = trained on; the rest is masked, train_on_inputs: false)"
        if color
        else f"({TRAINED_START}...{TRAINED_END} = trained on; the rest is masked, train_on_inputs: false)"
    )
    return "\n\n".join([legend, *blocks])
