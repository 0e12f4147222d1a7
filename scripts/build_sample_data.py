#!/usr/bin/env python3
"""Build mixft's bundled sample data from the hand-written sources in ``data/kb/``.

The sources are one JSON file per knowledge-base article of "Tallyboard", a fictional
project-management product (``data/kb/articles/NN-<article-id>.json``). Each holds the
article's snippets, the questions asked about it with their grounded answers, and labeled
chatbot responses to some of those questions. This script turns them into:

* ``sample_kb.jsonl``            - the knowledge base, one article per line;
* ``sample_qa.jsonl``            - grounded Q&A rows for ``mixft prepare rg``;
* ``sample_tc_responses.jsonl``  - labeled responses for ``mixft prepare tc`` (verdict label).

Output is deterministic: files are processed in name order, ids are numbered in that order,
and running the script twice gives byte-identical files. The content is validated first
(snippet references, exact-substring mistake spans, unique questions); any problem stops the
build with one line per problem and nothing is written.

    python scripts/build_sample_data.py            # rewrites data/*.jsonl
    python scripts/build_sample_data.py --out DIR  # writes the three files into DIR

Stdlib only, so it runs before the package is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KB_DIR = REPO_ROOT / "data" / "kb" / "articles"
DEFAULT_OUT_DIR = REPO_ROOT / "data"

QA_FILE = "sample_qa.jsonl"
TC_FILE = "sample_tc_responses.jsonl"
KB_FILE = "sample_kb.jsonl"

# Short codes used in the sources -> RAGTruth hallucination type names.
MISTAKE_TYPES = {
    "EC": "Evident Conflict",
    "SC": "Subtle Conflict",
    "EB": "Evident Baseless Info",
    "SB": "Subtle Baseless Info",
}
# Chatbot tag -> the `source` of its responses (RG model output vs. weaker-model augmentation).
MODELS = {"kb-bot-v1": "rg", "weak-bot": "augment"}
QA_SOURCES = ("synthetic", "live")
RELEVANT = "The response addresses the question that was asked."

_SNIPPET_REF = re.compile(r"^([a-z0-9][a-z0-9-]*)#([1-9][0-9]*)$")


class SourceError(Exception):
    """The hand-written sources are inconsistent; the message lists every problem."""


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    category: str
    snippets: list[str]
    qa: list[dict[str, Any]]
    path: Path


def load_articles(kb_dir: Path) -> list[Article]:
    """Read every ``*.json`` article source in name order."""
    paths = sorted(kb_dir.glob("*.json"))
    if not paths:
        raise SourceError(f"{kb_dir}: no article sources (*.json) found")
    articles = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            try:
                raw = json.load(fh)
            except json.JSONDecodeError as e:
                raise SourceError(f"{path.name}:{e.lineno}: invalid JSON: {e.msg}") from None
        missing = [key for key in ("id", "title", "category", "snippets") if key not in raw]
        missing += [
            f"qa[{i}].{key}"
            for i, item in enumerate(raw.get("qa", []), 1)
            for key in ("q", "a", "ctx", "src")
            if key not in item
        ]
        if missing:
            raise SourceError(f"{path.name}: missing field(s): {', '.join(missing)}")
        articles.append(
            Article(
                id=raw["id"],
                title=raw["title"],
                category=raw["category"],
                snippets=list(raw["snippets"]),
                qa=list(raw.get("qa", [])),
                path=path,
            )
        )
    return articles


def _resolve_context(
    refs: list[Any], article: Article, by_id: dict[str, Article], where: str, problems: list[str]
) -> list[str]:
    """Snippet references -> snippet texts. An int is a 1-based snippet of the same article;
    ``"other-article#N"`` is snippet N of another article (a distractor or a cross-reference)."""
    context = []
    for ref in refs:
        if isinstance(ref, int) and not isinstance(ref, bool):
            target, index = article, ref
        elif isinstance(ref, str) and (m := _SNIPPET_REF.match(ref)):
            target, index = by_id.get(m.group(1)), int(m.group(2))
            if target is None:
                problems.append(f"{where}: context: unknown article {m.group(1)!r}")
                continue
        else:
            problems.append(f"{where}: context: bad snippet reference {ref!r}")
            continue
        if not 1 <= index <= len(target.snippets):
            problems.append(f"{where}: context: {target.id} has no snippet {index}")
            continue
        context.append(target.snippets[index - 1])
    if not 1 <= len(context) <= 4:
        problems.append(f"{where}: context: {len(context)} snippets (want 1-4)")
    if len(set(context)) != len(context):
        problems.append(f"{where}: context: a snippet appears twice")
    return context


def _tidy(text: str) -> str:
    """Whitespace and punctuation clean-up after a span was replaced or deleted."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return text


def _verdict(resp: dict[str, Any], answer: str, where: str, problems: list[str]) -> dict[str, Any]:
    text = resp["text"]
    mistakes = []
    corrected = text
    for i, m in enumerate(resp.get("mistakes", [])):
        if not all(isinstance(m.get(key), str) for key in ("text", "type", "why")):
            problems.append(f"{where}: mistakes[{i}]: needs string fields 'text', 'type' and 'why'")
            continue
        span = m["text"]
        if m.get("type") not in MISTAKE_TYPES:
            problems.append(f"{where}: mistakes[{i}].type: {m.get('type')!r} is not one of {sorted(MISTAKE_TYPES)}")
            continue
        if not span or span not in text:
            problems.append(f"{where}: mistakes[{i}].text: {span!r} is not a substring of the response")
            continue
        if "fix" not in m and "corrected" not in resp:
            problems.append(f"{where}: mistakes[{i}]: needs 'fix' (replacement text) or the response needs 'corrected'")
            continue
        mistakes.append({"text": span, "type": MISTAKE_TYPES[m["type"]], "explanation": m["why"]})
        if "fix" in m:
            corrected = corrected.replace(span, m["fix"], 1)
    relevance_mistake = "rel" in resp
    if "corrected" in resp:
        corrected = resp["corrected"]
    elif mistakes:
        corrected = _tidy(corrected)
    elif relevance_mistake:
        corrected = answer  # the grounded answer to the question that was actually asked
    else:
        corrected = None
    return {
        "relevance": {"mistake": relevance_mistake, "explanation": resp.get("rel", RELEVANT)},
        "groundedness": {"mistake": bool(mistakes), "mistakes": mistakes},
        "corrected_response": corrected,
    }


def build_rows(articles: list[Article]) -> tuple[list[dict], list[dict], list[dict]]:
    """Validate the sources and return (kb rows, qa rows, tc rows) in their fixed order."""
    problems: list[str] = []
    by_id: dict[str, Article] = {}
    for art in articles:
        if art.id in by_id:
            problems.append(f"{art.path.name}: id: duplicate article id {art.id!r}")
        by_id[art.id] = art
    kb_rows, qa_rows, tc_rows = [], [], []
    seen_questions: set[str] = set()
    for art in articles:
        kb_rows.append({"article_id": art.id, "title": art.title, "category": art.category, "snippets": art.snippets})
        for qi, item in enumerate(art.qa, 1):
            where = f"{art.path.name}: qa[{qi}]"
            qa_id = f"qa-{len(qa_rows) + 1:04d}"
            if item.get("src") not in QA_SOURCES:
                problems.append(f"{where}: src: {item.get('src')!r} is not one of {QA_SOURCES}")
            if item["q"] in seen_questions:
                problems.append(f"{where}: q: duplicate question {item['q']!r}")
            seen_questions.add(item["q"])
            context = _resolve_context(item["ctx"], art, by_id, where, problems)
            qa_rows.append(
                {
                    "id": qa_id,
                    "question": item["q"],
                    "context": context,
                    "answer": item["a"],
                    "article_id": art.id,
                    "source": item["src"],
                }
            )
            for ri, resp in enumerate(item.get("r", []), 1):
                rwhere = f"{where}.r[{ri}]"
                if not isinstance(resp.get("text"), str) or not resp["text"].strip():
                    problems.append(f"{rwhere}: text: missing or empty")
                    continue
                if resp.get("model") not in MODELS:
                    problems.append(f"{rwhere}: model: {resp.get('model')!r} is not one of {sorted(MODELS)}")
                    continue
                tc_rows.append(
                    {
                        "id": f"resp-{len(tc_rows) + 1:04d}",
                        "question_id": qa_id,
                        "group": art.id,
                        "context": context,
                        "question": item["q"],
                        "response": resp["text"],
                        "model": resp["model"],
                        "source": MODELS[resp["model"]],
                        "verdict": _verdict(resp, item["a"], rwhere, problems),
                    }
                )
    if problems:
        raise SourceError("\n".join(problems))
    return kb_rows, qa_rows, tc_rows


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary repository files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(out_dir: Path, kb_dir: Path = DEFAULT_KB_DIR) -> dict[str, int]:
    """Write the three JSONL files into ``out_dir``; return row counts."""
    kb_rows, qa_rows, tc_rows = build_rows(load_articles(kb_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in ((KB_FILE, kb_rows), (QA_FILE, qa_rows), (TC_FILE, tc_rows)):
        _write_atomic(out_dir / name, _jsonl(rows))
    return {"articles": len(kb_rows), "qa": len(qa_rows), "responses": len(tc_rows)}


def summary(qa_rows: list[dict], tc_rows: list[dict]) -> dict[str, Any]:
    """Counts quoted in data/README.md."""

    def count(rows: list[dict], key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in rows:
            out[row[key]] = out.get(row[key], 0) + 1
        return dict(sorted(out.items()))

    halluc = [r for r in tc_rows if r["verdict"]["groundedness"]["mistake"]]
    per_model = {}
    for model in sorted(MODELS):
        rows = [r for r in tc_rows if r["model"] == model]
        bad = sum(r["verdict"]["groundedness"]["mistake"] for r in rows)
        per_model[model] = {"responses": len(rows), "hallucinated": bad, "share": round(bad / max(len(rows), 1), 3)}
    types: dict[str, int] = {}
    for r in halluc:
        for m in r["verdict"]["groundedness"]["mistakes"]:
            types[m["type"]] = types.get(m["type"], 0) + 1
    return {
        "qa": len(qa_rows),
        "qa_per_source": count(qa_rows, "source"),
        "qa_articles": len({r["article_id"] for r in qa_rows}),
        "qa_context_sizes": count([{"n": str(len(r["context"]))} for r in qa_rows], "n"),
        "responses": len(tc_rows),
        "responses_per_source": count(tc_rows, "source"),
        "per_model": per_model,
        "hallucinated": len(halluc),
        "hallucinated_share": round(len(halluc) / max(len(tc_rows), 1), 3),
        "relevance_mistakes": sum(r["verdict"]["relevance"]["mistake"] for r in tc_rows),
        "mistake_types": dict(sorted(types.items())),
        "mistake_spans": sum(types.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: data/)")
    parser.add_argument("--kb", type=Path, default=DEFAULT_KB_DIR, help="article sources (default: data/kb/articles/)")
    parser.add_argument("--stats", action="store_true", help="also print the counts quoted in data/README.md")
    args = parser.parse_args(argv)
    try:
        counts = build(args.out, args.kb)
    except SourceError as e:
        print(f"error: invalid sources:\n{e}", file=sys.stderr)
        return 2
    print(
        f"wrote {counts['articles']} articles, {counts['qa']} Q&A rows, {counts['responses']} labeled responses to {args.out}"
    )
    if args.stats:
        _, qa_rows, tc_rows = build_rows(load_articles(args.kb))
        print(json.dumps(summary(qa_rows, tc_rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
