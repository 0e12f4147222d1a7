"""``mixft judge``: truth-check responses with a TC model and write one judgement per id (docs/formats.md
§6). This module is the TC row builder for the shared runner (``mixtral_ft.infer.job``): the prompt
rendered and tokenized as in training, the verdict parsed (``parse_verdict``), and ``score`` (the
checker's probability that the response is hallucinated, :func:`groundedness_score`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.backends.base import Backend, GenerationParams, Request, Result
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.choices import JudgePrompt, values
from mixtral_ft.errors import UsageError
from mixtral_ft.infer.job import JobOptions, Preflight, run_job
from mixtral_ft.infer.rows import CONTEXT, QUESTION, RESPONSE, Field
from mixtral_ft.tc.prompt import load_template, render_tc_prompt, template_sha256
from mixtral_ft.tc.verdict import is_hallucinated, parse_verdict

JUDGE_PROMPT_STYLES = values(JudgePrompt)


@dataclass(frozen=True)
class JudgeConfig:
    responses: Path
    out: Path
    backend: BackendOptions
    prompt_style: str = "tc"
    template: Path | None = None
    count_relevance: bool = False
    params: GenerationParams = field(default_factory=lambda: GenerationParams(max_new_tokens=1024))
    limit: int | None = None
    force: bool = False
    score: bool = True


@dataclass
class JudgeSummary:
    out: Path
    total: int
    skipped: int
    retried: int
    written: int
    failed: int
    judged: int
    parse_failures: int
    hallucinated: int
    new_tokens: int
    wall_s: float
    tokens_per_s: float
    first_error: str | None
    score_off: str | None = None  # why no row has a score, when scoring was asked for but cannot be done
    changed: int = 0  # rows of an earlier run judged again because their input row changed

    @property
    def hallucinated_share(self) -> float | None:
        ok = self.judged - self.parse_failures
        return self.hallucinated / ok if ok else None

    @property
    def parse_failure_share(self) -> float | None:
        return self.parse_failures / self.judged if self.judged else None


def verdict_value_tokens(tokenizer) -> dict[int, bool]:
    """Single-token spellings of ``true`` / ``false`` in this vocabulary -> the value."""
    found: dict[int, bool] = {}
    for word, value in (("true", True), ("false", False)):
        for spelling in (word, " " + word):
            ids = tokenizer.encode(spelling, add_special_tokens=False)
            if len(ids) == 1:
                found.setdefault(ids[0], value)
    return found


def groundedness_value_offset(text: str) -> int | None:
    """Where the value of ``groundedness.mistake`` starts in ``text``, or None.

    The verdict is the first JSON object in ``text`` (code fences and prose around it are
    fine) whose ``groundedness.mistake`` is a boolean; the offset is found by walking that
    object's text, so any key order, nested ``mistakes`` objects and braces or key names
    inside strings are handled the way a JSON parser handles them.
    """
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        g = obj.get("groundedness") if isinstance(obj, dict) else None
        if isinstance(g, dict) and isinstance(g.get("mistake"), bool):
            return _value_offset(text, pos, end, ("groundedness", "mistake"))
        pos = text.find("{", end)
    return None


def _value_offset(text: str, start: int, end: int, path: tuple[str, ...]) -> int | None:
    """Offset of the value at key ``path`` in the valid JSON object ``text[start:end]``."""
    stack: list[tuple[str, str | None]] = []  # open containers: (bracket, the key whose value it is)
    key: str | None = None  # the last key read in the innermost object
    i = start
    while i < end:
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            k = j + 1
            while text[k] in " \t\r\n":
                k += 1
            if text[k] == ":" and stack[-1][0] == "{":  # a key, not a string value
                key = json.loads(text[i : j + 1])
                v = k + 1
                while text[v] in " \t\r\n":
                    v += 1
                if tuple(name for _, name in stack[1:]) + (key,) == path:
                    return v
                i = v
                continue
            i = j + 1
            continue
        if c in "{[":
            stack.append((c, key if stack and stack[-1][0] == "{" else None))
            key = None
        elif c in "}]":
            stack.pop()
        i += 1
    return None


def groundedness_score(
    text: str, token_ids: list[int], logprobs: list[list[float]], candidates: dict[int, bool], tokenizer
) -> float | None:
    """p(true) / (p(true) + p(false)) at the token that wrote ``groundedness.mistake``; None
    when there is no such value or it does not start on a token boundary."""
    start = groundedness_value_offset(text)
    if start is None or not candidates:
        return None
    cand_ids = list(candidates)
    for k in range(len(token_ids)):
        end = len(tokenizer.decode(token_ids[: k + 1], skip_special_tokens=True))
        if end > start:
            if token_ids[k] not in candidates or k >= len(logprobs):
                return None
            p_true = sum(math.exp(lp) for tid, lp in zip(cand_ids, logprobs[k]) if candidates[tid])
            p_false = sum(math.exp(lp) for tid, lp in zip(cand_ids, logprobs[k]) if not candidates[tid])
            return p_true / (p_true + p_false) if p_true + p_false > 0 else None
    return None


def judgement_row(
    row: dict[str, Any], result: Result, judge_id: dict[str, Any], count_relevance: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "source": row.get("source"),
        "model": row.get("model"),
        "group": row.get("group"),
    }
    if not result.ok:
        out.update(verdict=None, parse_ok=False, parse_error=None, raw=None, hallucinated=None, score=None)
    else:
        parsed = parse_verdict(result.text or "")
        verdict = parsed.verdict if parsed.ok else None  # ok: a verdict
        out.update(
            verdict=verdict.to_dict() if verdict is not None else None,
            parse_ok=parsed.ok,
            parse_error=parsed.error,
            raw=parsed.raw,
            hallucinated=is_hallucinated(verdict, count_relevance) if verdict is not None else None,
            score=result.score if parsed.ok else None,
        )
    out.update(
        latency_s=result.latency_s,
        n_new_tokens=result.n_new_tokens,
        finish_reason=result.finish_reason,
        judge=judge_id,
        error=result.error,
    )
    return out


class _ScoringBackend:
    """Wraps the hf backend: records true/false log-probs and turns them into ``score``."""

    def __init__(self, inner, candidates: dict[int, bool]):
        self.inner = inner
        self.candidates = candidates
        self.name = inner.name
        inner.record_token_ids = list(candidates)

    def identity(self):
        return self.inner.identity()

    def run(self, requests, params):
        for result in self.inner.run(requests, params):
            if result.ok and "token_ids" in result.extra:
                result.score = groundedness_score(
                    result.text or "",
                    result.extra["token_ids"],
                    result.extra["logprobs"],
                    self.candidates,
                    self.inner.tokenizer,
                )
            result.extra = {}
            yield result

    def close(self):
        self.inner.close()


def scoring_off_reason(cfg: JudgeConfig, backend: Backend | None = None) -> str | None:
    """Why ``score`` cannot be computed for this run (None: it will be), known before any model loads."""
    if not cfg.score:
        return "--no-score"
    if cfg.backend.name != "hf":
        return f"the {cfg.backend.name} backend returns no token log-probabilities (score needs --backend hf)"
    if not cfg.params.greedy:
        return "sampling (--temperature > 0): the score is defined for greedy decoding"
    if backend is not None and not (hasattr(backend, "tokenizer") and hasattr(backend, "record_token_ids")):
        name = getattr(backend, "name", type(backend).__name__)
        return f"the {name} backend given exposes no tokenizer or log-probabilities"
    return None


class JudgeRows:
    """The TC row builder (``infer.job.RowBuilder``).

    The TC model was trained (Axolotl user-defined type, ``format: "{instruction}"``) on the
    rendered prompt tokenized with BOS and no EOS, followed by the verdict JSON + EOS. At
    inference the same rendered prompt (``render_tc_prompt``) is tokenized the same way and the
    model generates the verdict; ``parse_verdict`` turns its text into a verdict or a recorded
    parse failure.

    ``score`` (hf backend, greedy only): the checker's probability that the response is
    hallucinated, read at the step where the model wrote the value of ``groundedness.mistake``:
    p(true) / (p(true) + p(false)) over the single-token spellings of ``true``/``false``. It is
    null in a row when the verdict did not parse or the value does not start on a token boundary,
    and in every row when scoring cannot be done (another backend, sampling, a vocabulary without
    single-token ``true``/``false``): the summary then says why (``score_off``) and the manifest
    records it (``scoring``).
    """

    kind = "judge"
    input_role = "responses"
    fields: Sequence[Field] = (CONTEXT, QUESTION, RESPONSE)
    # what the prompt and the copied fields come from (a re-generated file's latencies do not count)
    input_keys: Sequence[str] | None = ("id", "context", "question", "response", "source", "model", "group")

    def __init__(self, cfg: JudgeConfig, backend: Backend | None = None):
        if cfg.prompt_style not in JUDGE_PROMPT_STYLES:
            raise UsageError(f"Unknown prompt style '{cfg.prompt_style}'. Available: {', '.join(JUDGE_PROMPT_STYLES)}")
        self.cfg = cfg
        self.template = load_template(cfg.template)
        self.prompt_sha256 = template_sha256(self.template)
        self.score_off = scoring_off_reason(cfg, backend)
        self.judge_id = {
            "backend": cfg.backend.name,
            "model": cfg.backend.model,
            "adapter": cfg.backend.adapter,
            "prompt_sha256": self.prompt_sha256,
        }

    def settings(self) -> dict[str, Any]:
        return {
            "prompt": self.cfg.prompt_style,
            "prompt_sha256": self.prompt_sha256,
            "count_relevance": self.cfg.count_relevance,
            "score": self.score_off is None,
        }

    def prepare_backend(self, backend: Backend) -> Backend:
        if self.score_off is not None:
            return backend
        candidates = verdict_value_tokens(backend.tokenizer)  # type: ignore[attr-defined]
        if not candidates:
            self.score_off = "this tokenizer spells neither 'true' nor 'false' as a single token"
            return backend
        return _ScoringBackend(backend, candidates)

    def request(self, row: dict[str, Any]) -> Request:
        prompt = render_tc_prompt(row["context"], row["question"], row["response"], template=self.template)
        if self.cfg.prompt_style == "chat":
            return Request(row["id"], messages=({"role": "user", "content": prompt},))
        return Request(row["id"], prompt=prompt)

    def output_row(self, row: dict[str, Any], result: Result) -> dict[str, Any]:
        return judgement_row(row, result, self.judge_id, self.cfg.count_relevance)

    def summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        judged = len(rows)
        parse_failures = sum(not r.get("parse_ok") for r in rows)
        hallucinated = sum(r.get("hallucinated") is True for r in rows)
        parsed = judged - parse_failures
        return {
            "judged": judged,
            "parse_failures": parse_failures,
            "hallucinated": hallucinated,
            "hallucinated_share": hallucinated / parsed if parsed else None,
            "parse_failure_share": parse_failures / judged if judged else None,
            "scored": sum(r.get("score") is not None for r in rows),
        }

    def manifest_extra(self) -> dict[str, Any]:
        return {
            "template": str(self.cfg.template) if self.cfg.template else "tc_v1 (shipped)",
            "scoring": {"enabled": self.score_off is None, "off_because": self.score_off},
        }


def judge(cfg: JudgeConfig, backend: Backend | None = None, preflight: Preflight | None = None) -> JudgeSummary:
    """Judge every response of ``cfg.responses`` not yet in ``cfg.out``; return the counts.

    Shares are over the whole output file (earlier runs included), recomputed from it.
    ``preflight`` is the command's check of the rows left to do (``infer.job.JobOptions``).
    """
    job = JobOptions(
        input=cfg.responses,
        out=cfg.out,
        backend=cfg.backend,
        params=cfg.params,
        limit=cfg.limit,
        force=cfg.force,
        preflight=preflight,
    )
    rows = JudgeRows(cfg, backend)
    r = run_job(job, rows, backend)
    return JudgeSummary(
        out=r.out,
        total=r.total,
        skipped=r.skipped,
        retried=r.retried,
        written=r.stats.written,
        failed=r.stats.failed,
        judged=r.summary["judged"],
        parse_failures=r.summary["parse_failures"],
        hallucinated=r.summary["hallucinated"],
        new_tokens=r.stats.new_tokens,
        wall_s=r.stats.wall_s,
        tokens_per_s=r.stats.tokens_per_s,
        first_error=r.stats.first_error,
        score_off=rows.score_off if cfg.score else None,
        changed=r.changed,
    )
