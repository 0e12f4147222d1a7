"""``prepare tc --judgements``: ``mixft judge`` outputs (docs/formats.md §6) as labels for rows
that carry none, joined by id.

``read_judgements`` writes every judgement to a hash partition by id (before the read pass, so a
bad judgement file stops the run at once); ``judgements_of_partition`` reads one partition back
as ``Judgement``s, with the same id judged differently twice as a problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import orjson

from mixtral_ft.errors import Problem
from mixtral_ft.prepare.buckets import Partitions, partition_of, read_partition
from mixtral_ft.prepare.fields import ProblemCollector, check_id
from mixtral_ft.prepare.readers import InputSpec, iter_rows

_PREFIX = "judgement"


class Judgement(NamedTuple):
    """One id's judgement: where it was read, its verdict object (None: it did not parse) and why not."""

    file: str
    line: int
    verdict: Any
    error: str | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def read_judgements(specs: tuple[InputSpec, ...], work: Path, n_parts: int) -> None:
    """Write the judgements of ``specs`` to partitions by id under ``work``. Every problem in
    them stops the command (they are mixft's own outputs)."""
    problems = ProblemCollector()
    with Partitions(work, n_parts, prefix=_PREFIX) as parts:
        for file_idx, spec in enumerate(specs):
            for raw in iter_rows(spec):
                if raw.obj is None:
                    assert raw.problem is not None  # a RawRow without obj carries its problem
                    problems.add(raw.problem)
                    continue
                key, msg = check_id(raw.obj.get("id"))
                if msg:
                    problems.add(Problem(spec.display, raw.line, "id", msg))
                    continue
                id_b = orjson.dumps(key)
                error = raw.obj.get("parse_error") or raw.obj.get("error")
                record = orjson.dumps([file_idx, raw.line, raw.obj.get("verdict"), error])
                parts.add_lines(partition_of(id_b, parts.n_parts), [b"%s\t%s\n" % (id_b, record)])
    problems.raise_if_any()


def judgements_of_partition(
    work: Path, index: int, files: list[str], problems: ProblemCollector
) -> dict[bytes, Judgement]:
    """``id JSON -> Judgement`` of partition ``index``; an id judged twice keeps its first
    judgement, and two different verdicts for one id are a problem."""
    out: dict[bytes, Judgement] = {}
    canon: dict[bytes, bytes] = {}
    for id_b, record in read_partition(work, index, _PREFIX):
        file_idx, line, verdict, error = orjson.loads(record)
        same = orjson.dumps(verdict, option=orjson.OPT_SORT_KEYS)
        if id_b in out:
            if canon[id_b] != same:
                message = f"'{orjson.loads(id_b)}' was judged differently at {out[id_b].where}"
                problems.add(Problem(files[file_idx], line, "id", message))
            continue
        out[id_b] = Judgement(files[file_idx], line, verdict, error)
        canon[id_b] = same
    return out
