"""Read RAGTruth QA (``ragtruth_qa.jsonl``: one line per question, up to six responses) as
responses rows (docs/formats.md §3) with RAGTruth ``labels``.

Each response becomes one row: ``id`` ``ragtruth-<source_id>-<model>``, ``group`` the
``source_id`` (the responses to one question never straddle the split), ``source``
``ragtruth``, ``context`` the passages, and the annotated spans as ``labels``.
``expand_ragtruth`` works on one decoded line, so ``prepare tc`` reads RAGTruth files with the
same readers (and byte ranges) as any JSONL input.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mixtral_ft.errors import Problem

SOURCE = "ragtruth"


class Expanded(NamedTuple):
    """One response of a RAGTruth line: its row, or (``row`` None) why it cannot be one."""

    row: dict[str, Any] | None
    problems: list[Problem]


def expand_ragtruth(obj: dict[str, Any], display: str, line: int) -> list[Expanded]:
    """The response rows of one RAGTruth line, each ``Expanded(row, [])``; a line or a response
    that cannot be expanded gives ``Expanded(None, problems)``. Rows carry ``_fields``: where
    each field came from, for ``file:line: field:`` messages."""
    problems = []
    source_id = obj.get("source_id")
    if not isinstance(source_id, (int, str)) or isinstance(source_id, bool) or source_id == "":
        problems.append(Problem(display, line, "source_id", "missing or not an integer/string"))
    src = obj.get("source")
    if not isinstance(src, dict):
        problems.append(Problem(display, line, "source", "expected an object with 'question' and 'passages'"))
        src = {}
    responses = obj.get("responses")
    if not isinstance(responses, list):
        problems.append(Problem(display, line, "responses", "expected a list"))
        responses = []
    if problems:
        return [Expanded(None, problems)]
    out: list[Expanded] = []
    for j, resp in enumerate(responses):
        if not isinstance(resp, dict):
            out.append(Expanded(None, [Problem(display, line, f"responses[{j}]", "expected an object")]))
            continue
        model = resp.get("model")
        out.append(
            Expanded(
                {
                    "id": f"ragtruth-{source_id}-{model if isinstance(model, str) and model else j}",
                    "source": SOURCE,
                    "model": model,
                    "group": str(source_id),
                    "source_id": source_id,
                    "context": src.get("passages"),
                    "question": src.get("question"),
                    "response": resp.get("response"),
                    "labels": resp.get("labels"),
                    "_fields": {
                        "context": "source.passages",
                        "question": "source.question",
                        "response": f"responses[{j}].response",
                        "labels": f"responses[{j}].labels",
                        "model": f"responses[{j}].model",
                    },
                },
                [],
            )
        )
    return out
