"""``mixft judge``: truth-check responses with a TC model and write one judgement per id.

The TC model was trained (Axolotl user-defined type, ``format: "{instruction}"``) on the
rendered prompt tokenized with BOS and no EOS, followed by the verdict JSON + EOS. At
inference the same rendered prompt (``render_tc_prompt``) is tokenized the same way and the
model generates the verdict; ``parse_verdict`` turns its text into a verdict or a recorded
parse failure. Rows follow docs/formats.md §6.

``score`` (hf backend, greedy only): the checker's probability that the response is
hallucinated, read at the step where the model wrote the value of ``groundedness.mistake``:
p(true) / (p(true) + p(false)) over the single-token spellings of ``true``/``false``. It is
null when the value is not on a token boundary, when the verdict did not parse, or for
other backends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.backends.base import GenerationParams, Request, Result
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.generate.resume import ResumableOutput

JUDGE_PROMPT_STYLES = ("tc", "chat")
_GROUNDED_VALUE_RE = re.compile(r'"groundedness"\s*:\s*\{[^{}]*?"mistake"\s*:\s*(true|false)')


@dataclass(frozen=True)
class JudgeConfig:
    responses: Path
    out: Path
    backend: str
    model: str
    adapter: str | None = None
    prompt_style: str = "tc"
    template: Path | None = None
    count_relevance: bool = False
    params: GenerationParams = field(default_factory=lambda: GenerationParams(max_new_tokens=1024))
    backend_options: dict[str, Any] = field(default_factory=dict)
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

    @property
    def hallucinated_share(self) -> float | None:
        ok = self.judged - self.parse_failures
        return self.hallucinated / ok if ok else None

    @property
    def parse_failure_share(self) -> float | None:
        return self.parse_failures / self.judged if self.judged else None


def load_responses(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of docs/formats.md §3, checked for what judging needs; every problem at once."""
    from mixtral_ft.util.jsonl import read_jsonl

    rows, problems, seen = [], [], {}
    name = str(path)
    for lineno, row in enumerate(read_jsonl(path), 1):
        key = row.get("id")
        if not isinstance(key, str) or not key:
            problems.append(Problem(name, lineno, "id", "missing or not a non-empty string"))
        elif key in seen:
            problems.append(Problem(name, lineno, "id", f"duplicate id {key!r} (first on row {seen[key]})"))
        else:
            seen[key] = lineno
        ctx = row.get("context")
        if not (isinstance(ctx, str) or (isinstance(ctx, list) and all(isinstance(s, str) for s in ctx))):
            problems.append(Problem(name, lineno, "context", "missing or not a string (or list of strings)"))
        if not isinstance(row.get("question"), str):
            problems.append(Problem(name, lineno, "question", "missing or not a string"))
        resp = row.get("response")
        if resp is None and row.get("error"):
            problems.append(Problem(name, lineno, "response", "null because generation failed; re-run mixft generate"))
        elif not isinstance(resp, str):
            problems.append(Problem(name, lineno, "response", "missing or not a string"))
        rows.append(row)
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError([Problem(name, None, None, "no rows")])
    return rows[:limit] if limit is not None else rows


def verdict_value_tokens(tokenizer) -> dict[int, bool]:
    """Single-token spellings of ``true`` / ``false`` in this vocabulary -> the value."""
    found: dict[int, bool] = {}
    for word, value in (("true", True), ("false", False)):
        for spelling in (word, " " + word):
            ids = tokenizer.encode(spelling, add_special_tokens=False)
            if len(ids) == 1:
                found.setdefault(ids[0], value)
    return found


def groundedness_score(text: str, token_ids: list[int], logprobs: list[list[float]], candidates: dict[int, bool],
                       tokenizer) -> float | None:
    """p(true) / (p(true) + p(false)) at the token that wrote ``groundedness.mistake``."""
    m = _GROUNDED_VALUE_RE.search(text)
    if not m or not candidates:
        return None
    start = m.start(1)
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


def judgement_row(row: dict[str, Any], result: Result, judge_id: dict[str, Any], count_relevance: bool) -> dict[str, Any]:
    from mixtral_ft.tc.verdict import is_hallucinated, parse_verdict

    out: dict[str, Any] = {
        "id": row["id"], "source": row.get("source"), "model": row.get("model"), "group": row.get("group"),
    }
    if not result.ok:
        out.update(verdict=None, parse_ok=False, parse_error=None, raw=None, hallucinated=None, score=None)
    else:
        parsed = parse_verdict(result.text or "")
        out.update(
            verdict=parsed.verdict.to_dict() if parsed.ok else None,
            parse_ok=parsed.ok,
            parse_error=parsed.error,
            raw=parsed.raw,
            hallucinated=is_hallucinated(parsed.verdict, count_relevance) if parsed.ok else None,
            score=result.score if parsed.ok else None,
        )
    out.update(latency_s=result.latency_s, n_new_tokens=result.n_new_tokens, finish_reason=result.finish_reason,
               judge=judge_id, error=result.error)
    return out


class _ScoringBackend:
    """Wraps the hf backend: records true/false log-probs and turns them into ``score``."""

    def __init__(self, inner, candidates: dict[int, bool]):
        self.inner = inner
        self.candidates = candidates
        self.name = inner.name

    def identity(self):
        return self.inner.identity()

    def run(self, requests, params):
        for result in self.inner.run(requests, params):
            if result.ok and "token_ids" in result.extra:
                result.score = groundedness_score(result.text or "", result.extra["token_ids"],
                                                  result.extra["logprobs"], self.candidates, self.inner.tokenizer)
            result.extra = {}
            yield result

    def close(self):
        self.inner.close()


def judge(cfg: JudgeConfig, backend=None) -> JudgeSummary:
    """Judge every response of ``cfg.responses`` not yet in ``cfg.out``; return the counts."""
    from mixtral_ft.backends import backend_factory, create_backend
    from mixtral_ft.generate.loop import drive
    from mixtral_ft.generate.run import adapter_sha256
    from mixtral_ft.tc.prompt import load_template, render_tc_prompt, template_sha256
    from mixtral_ft.util.hashing import sha256_file, sha256_json
    from mixtral_ft.util.provenance import command_line, environment, now_iso, write_manifest
    from mixtral_ft.util.jsonl import read_jsonl_tolerant

    if cfg.prompt_style not in JUDGE_PROMPT_STYLES:
        raise UsageError(f"Unknown prompt style '{cfg.prompt_style}'. Available: {', '.join(JUDGE_PROMPT_STYLES)}")
    backend_factory(cfg.backend)
    if cfg.backend == "openai" and cfg.adapter:
        raise UsageError("--adapter is for the hf backend; an endpoint serves its adapter under its own model name")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {cfg.limit})")
    template = load_template(cfg.template)
    prompt_sha = template_sha256(template)
    rows = load_responses(cfg.responses, cfg.limit)
    scoring = cfg.score and cfg.backend == "hf" and cfg.params.greedy
    settings = {
        "backend": cfg.backend, "model": cfg.model, "adapter": cfg.adapter, "adapter_sha256": adapter_sha256(cfg.adapter),
        "prompt": cfg.prompt_style, "prompt_sha256": prompt_sha, "count_relevance": cfg.count_relevance,
        "generation": cfg.params.to_dict(), "endpoint_mode": cfg.backend_options.get("mode"), "score": scoring,
    }
    output = ResumableOutput(cfg.out, sha256_json(settings), force=cfg.force)
    pending = [r for r in rows if r["id"] not in output.done]
    started = (output.previous_manifest() or {}).get("started") or now_iso()
    judge_id = {"backend": cfg.backend, "model": cfg.model, "adapter": cfg.adapter, "prompt_sha256": prompt_sha}
    by_id = {r["id"]: r for r in rows}

    def manifest(identity, summary):
        return {
            "kind": "mixft-judge", "command": command_line(), "started": started, "updated": now_iso(),
            "settings": settings, "settings_sha256": sha256_json(settings), "backend": identity,
            "quantization": (identity or {}).get("quantization"),
            "template": str(cfg.template) if cfg.template else "tc_v1 (shipped)",
            "responses": {"path": str(cfg.responses), "sha256": sha256_file(cfg.responses), "rows": len(rows),
                          "limit": cfg.limit},
            "output": str(cfg.out), "summary": summary, "environment": environment(),
        }

    stats = None
    identity = (output.previous_manifest() or {}).get("backend")
    if pending:
        if backend is None:
            opts = dict(cfg.backend_options, model=cfg.model)
            if cfg.backend == "hf":
                opts["adapter"] = cfg.adapter
            backend = create_backend(cfg.backend, **opts)
        if scoring and hasattr(backend, "tokenizer"):
            candidates = verdict_value_tokens(backend.tokenizer)
            backend.record_token_ids = list(candidates)
            backend = _ScoringBackend(backend, candidates)
        identity = backend.identity()
        write_manifest(output.manifest_path, manifest(identity, None))

        def request(row):
            prompt = render_tc_prompt(row["context"], row["question"], row["response"], template=template)
            if cfg.prompt_style == "chat":
                return Request(row["id"], messages=({"role": "user", "content": prompt},))
            return Request(row["id"], prompt=prompt)

        try:
            with output:
                stats = drive(backend, [request(r) for r in pending], cfg.params, output,
                              lambda result: judgement_row(by_id[result.key], result, judge_id, cfg.count_relevance),
                              desc="judge")
        finally:
            backend.close()
    # Shares are over the whole output file (earlier runs included), recomputed from it.
    judged = parse_failures = hallucinated = 0
    wanted = set(by_id)
    for row in read_jsonl_tolerant(cfg.out):
        if row.get("id") in wanted and row.get("error") is None:
            judged += 1
            parse_failures += not row.get("parse_ok")
            hallucinated += row.get("hallucinated") is True
    summary = JudgeSummary(
        out=cfg.out, total=len(rows), skipped=len(rows) - len(pending), retried=output.retrying,
        written=stats.written if stats else 0, failed=stats.failed if stats else 0, judged=judged,
        parse_failures=parse_failures, hallucinated=hallucinated,
        new_tokens=stats.new_tokens if stats else 0, wall_s=stats.wall_s if stats else 0.0,
        tokens_per_s=stats.tokens_per_s if stats else 0.0, first_error=stats.first_error if stats else None,
    )
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in summary.__dict__.items()}
    data.update(hallucinated_share=summary.hallucinated_share, parse_failure_share=summary.parse_failure_share)
    write_manifest(output.manifest_path, manifest(identity, data))
    return summary
