"""Read RAGTruth QA (``ragtruth_qa.jsonl``: one line per question, up to six responses) as
responses rows (docs/formats.md §3) with RAGTruth ``labels``.

Each response becomes one row: ``id`` ``ragtruth-<source_id>-<model>``, ``group`` the
``source_id`` (the responses to one question never straddle the split), ``source``
``ragtruth``, ``context`` the passages, and the annotated spans as ``labels``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from mixtral_ft.errors import Problem

SOURCE = "ragtruth"


def _problem(path: str, line: int, field: str, message: str) -> Problem:
    return Problem(path, line, field, message)


def read_ragtruth(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | None, list[Problem]]]:
    """Yield ``(line, row, problems)`` per response; a line that cannot be expanded yields
    ``(line, None, problems)`` once."""
    from mixtral_ft.util.jsonl import scan_jsonl

    path = str(path)
    for item in scan_jsonl(path):
        lineno, obj = item.line, item.obj
        if obj is None:
            yield lineno, None, [item.problem]
            continue
        problems = []
        source_id = obj.get("source_id")
        if not isinstance(source_id, (int, str)) or isinstance(source_id, bool) or source_id == "":
            problems.append(_problem(path, lineno, "source_id", "missing or not an integer/string"))
        src = obj.get("source")
        if not isinstance(src, dict):
            problems.append(_problem(path, lineno, "source", "expected an object with 'question' and 'passages'"))
            src = {}
        responses = obj.get("responses")
        if not isinstance(responses, list):
            problems.append(_problem(path, lineno, "responses", "expected a list"))
        if problems:
            yield lineno, None, problems
            continue
        for j, resp in enumerate(responses):
            if not isinstance(resp, dict):
                yield lineno, None, [_problem(path, lineno, f"responses[{j}]", "expected an object")]
                continue
            model = resp.get("model")
            row = {
                "id": f"ragtruth-{source_id}-{model if isinstance(model, str) and model else j}",
                "source": SOURCE,
                "model": model,
                "group": str(source_id),
                "source_id": source_id,
                "context": src.get("passages"),
                "question": src.get("question"),
                "response": resp.get("response"),
                "labels": resp.get("labels"),
                # where each field came from, for `file:line: field:` messages
                "_fields": {"context": "source.passages", "question": "source.question",
                            "response": f"responses[{j}].response", "labels": f"responses[{j}].labels",
                            "model": f"responses[{j}].model"},
            }
            yield lineno, row, []
