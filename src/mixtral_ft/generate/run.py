"""``mixft generate``: one RG response per test row, appended to a resumable JSONL file.

This module is the RG row builder for the shared runner (``mixtral_ft.infer.job``): the
request for a test row (the training prompt or a chat turn) and the output row for a result.
Output rows follow docs/formats.md §2; ``FILE.manifest.json`` is the runner's manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.backends.base import Backend, GenerationParams, Request, Result
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.errors import UsageError
from mixtral_ft.generate.prompts import CHAT_INSTRUCTION, PROMPT_STYLES, chat_messages, rg_prompt, strip_answer_prefix
from mixtral_ft.infer.job import JobOptions, Preflight, run_job
from mixtral_ft.infer.rows import CONTEXT, QUESTION, Field

# Input fields that are renamed or rebuilt in the output row; every other field is copied.
_CONSUMED = {"answer"}


@dataclass(frozen=True)
class GenerateConfig:
    data: Path
    out: Path
    backend: BackendOptions
    prompt_style: str = "rg"
    params: GenerationParams = field(default_factory=GenerationParams)
    limit: int | None = None
    force: bool = False


@dataclass
class GenerateSummary:
    out: Path
    total: int
    skipped: int
    retried: int
    written: int
    failed: int
    new_tokens: int
    wall_s: float
    tokens_per_s: float
    missing_prefix: int  # responses in the output without the trained "Answer:" prefix
    first_error: str | None
    changed: int = 0  # rows of an earlier run done again because their input row changed


def make_request(row: dict[str, Any], style: str) -> Request:
    if style == "rg":
        return Request(row["id"], prompt=rg_prompt(row["context"], row["question"]))
    return Request(row["id"], messages=tuple(chat_messages(row["context"], row["question"])))


def output_row(row: dict[str, Any], result: Result, cfg: GenerateConfig) -> dict[str, Any]:
    response, prefix = (None, None)
    if result.ok:
        if cfg.prompt_style == "rg":
            response, prefix = strip_answer_prefix(result.text or "")
        else:
            response = (result.text or "").strip()
    b = cfg.backend
    out = {
        "id": row["id"],
        "source": row.get("source"),
        "group": row.get("group"),
        "context": row["context"],
        "question": row["question"],
        "reference_answer": row.get("answer"),
        "response": response,
        "model": {"name": b.model, "adapter": b.adapter, "backend": b.name, "prompt": cfg.prompt_style},
        "generation": cfg.params.to_dict(),
        "n_prompt_tokens": result.n_prompt_tokens,
        "n_new_tokens": result.n_new_tokens,
        "latency_s": result.latency_s,
        "finish_reason": result.finish_reason,
        "answer_prefix": prefix,
        "error": result.error,
    }
    for k, v in row.items():
        if k not in out and k not in _CONSUMED:
            out[k] = v
    return out


class GenerateRows:
    """The RG row builder (``infer.job.RowBuilder``)."""

    kind = "generate"
    input_role = "data"
    fields: Sequence[Field] = (CONTEXT, QUESTION)
    input_keys: Sequence[str] | None = None  # every input field is copied into the output row: all of them count

    def __init__(self, cfg: GenerateConfig):
        if cfg.prompt_style not in PROMPT_STYLES:
            raise UsageError(f"Unknown prompt style '{cfg.prompt_style}'. Available: {', '.join(PROMPT_STYLES)}")
        self.cfg = cfg

    def settings(self) -> dict[str, Any]:
        return {
            "prompt": self.cfg.prompt_style,
            "chat_instruction": CHAT_INSTRUCTION if self.cfg.prompt_style == "chat" else None,
        }

    def prepare_backend(self, backend: Backend) -> Backend:
        return backend

    def request(self, row: dict[str, Any]) -> Request:
        return make_request(row, self.cfg.prompt_style)

    def output_row(self, row: dict[str, Any], result: Result) -> dict[str, Any]:
        return output_row(row, result, self.cfg)

    def summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"missing_prefix": sum(r.get("answer_prefix") is False for r in rows)}

    def manifest_extra(self) -> dict[str, Any]:
        return {}


def generate(
    cfg: GenerateConfig, backend: Backend | None = None, preflight: Preflight | None = None
) -> GenerateSummary:
    """Generate for every row of ``cfg.data`` not yet in ``cfg.out``; return the run's counts.

    ``backend`` may be passed in (tests, benchmarks); otherwise it is built from ``cfg.backend``.
    ``preflight`` is the command's check of the rows left to do (``infer.job.JobOptions``).
    """
    job = JobOptions(
        input=cfg.data,
        out=cfg.out,
        backend=cfg.backend,
        params=cfg.params,
        limit=cfg.limit,
        force=cfg.force,
        preflight=preflight,
    )
    r = run_job(job, GenerateRows(cfg), backend)
    return GenerateSummary(
        out=r.out,
        total=r.total,
        skipped=r.skipped,
        retried=r.retried,
        written=r.stats.written,
        failed=r.stats.failed,
        new_tokens=r.stats.new_tokens,
        wall_s=r.stats.wall_s,
        tokens_per_s=r.stats.tokens_per_s,
        missing_prefix=r.summary["missing_prefix"],
        first_error=r.stats.first_error,
        changed=r.changed,
    )
