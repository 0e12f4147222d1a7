"""Prompt lengths of a ``generate``/``judge`` input file, built as those commands build them.

``generate``: each test row's ``context_qa.load_v2`` prompt (``--prompt rg``) or its chat turn
(``--prompt chat``, rendered with the tokenizer's chat template); ``judge``: the TC prompt of
each response (``tc/prompt.py``), or that prompt as one chat turn. Tokenized with the tokenizer
the hf backend uses (the adapter's when it has one, else the model's) when it is a local
directory; otherwise 4 characters per token, labelled as an estimate. Cached by file SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mixtral_ft.data.lengths import char_estimate_from_count, load_tokenizer
from mixtral_ft.errors import InputError, Problem
from mixtral_ft.generate.prompts import chat_messages, rg_prompt
from mixtral_ft.plan import measure
from mixtral_ft.tc.prompt import load_template, render_tc_prompt
from mixtral_ft.util.hashing import sha256_file
from mixtral_ft.util.jsonl import read_jsonl


def _texts(kind: str, path: Path, prompt_style: str, template: Path | None) -> list[tuple[str | None, list | None]]:
    """(raw prompt, chat messages) per row."""
    out: list[tuple[str | None, list | None]] = []
    problems: list[Problem] = []
    tc_template = None
    if kind == "judge":
        tc_template = load_template(template)
    for lineno, row in enumerate(read_jsonl(path), 1):
        fields = ("context", "question") + (("response",) if kind == "judge" else ())
        missing = [f for f in fields if row.get(f) is None]
        if missing:
            problems.append(Problem(str(path), lineno, missing[0], "missing (needed to build the prompt)"))
            continue
        if kind == "generate":
            if prompt_style == "chat":
                out.append((None, chat_messages(row["context"], row["question"])))
            else:
                out.append((rg_prompt(row["context"], row["question"]), None))
        else:
            text = render_tc_prompt(row["context"], row["question"], row["response"], tc_template)
            out.append((None, [{"role": "user", "content": text}]) if prompt_style == "chat" else (text, None))
    if problems:
        raise InputError(problems)
    if not out:
        raise InputError([Problem(str(path), None, None, "no rows")])
    return out


def tokenizer_source(model: str, adapter: str | None) -> Path | None:
    for cand in (adapter, model):
        if cand and Path(cand).is_dir() and (Path(cand) / "tokenizer_config.json").exists():
            return Path(cand)
    return None


def prompt_lengths(
    kind: str, path: Path, model: str, adapter: str | None, prompt_style: str, template: Path | None = None
) -> tuple[list[int], str]:
    """Token count of every prompt in ``path`` and how it was counted."""
    tok_dir = tokenizer_source(model, adapter)
    tpl = sha256_file(template) if template else None
    key = (
        "prompts-"
        + hashlib.sha256(
            json.dumps(
                [sha256_file(path), kind, prompt_style, tpl, str(tok_dir.resolve()) if tok_dir else None]
            ).encode()
        ).hexdigest()[:24]
    )
    cached = measure._read_cache(key)
    if cached is not None:
        return cached["lengths"], cached["method"]
    texts = _texts(kind, path, prompt_style, template)
    lengths, method = _lengths(texts, tok_dir)
    measure._write_cache(key, {"lengths": lengths, "method": method})
    return lengths, method


def _lengths(texts: list[tuple[str | None, list | None]], tok_dir: Path | None) -> tuple[list[int], str]:
    """Token counts of (raw prompt, chat messages) pairs, as the hf backend tokenizes them."""
    if tok_dir is not None:
        tok = load_tokenizer(tok_dir)
        lengths = []
        for raw, messages in texts:
            if raw is not None:
                lengths.append(len(tok(raw, add_special_tokens=True)["input_ids"]))
            else:
                assert messages is not None  # no raw prompt: chat messages
                text = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
                lengths.append(len(tok(text, add_special_tokens=False)["input_ids"]))
        return lengths, f"tokenizer ({tok_dir})"

    return (
        [
            char_estimate_from_count(
                len(raw) if raw is not None else sum(len(m["content"]) for m in messages or []) + 20
            )
            for raw, messages in texts
        ],
        "estimate (4 characters per token)",
    )


def request_lengths(requests, model: str, adapter: str | None) -> tuple[list[int], str]:
    """Token counts of the runner's ``Request`` objects (``prompt`` or ``messages``), for
    :func:`mixtral_ft.plan.check.preflight_inference` inside ``generate``/``judge``."""
    return _lengths([(r.prompt, r.messages) for r in requests], tokenizer_source(model, adapter))
