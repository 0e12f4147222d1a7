"""``mixft generate``: one RG response per test row, appended to a resumable JSONL file.

Output rows follow docs/formats.md §2; ``FILE.manifest.json`` records the model identity,
adapter hash, prompt, generation parameters, data hash, versions and the run's counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.backends.base import GenerationParams, Request, Result
from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.generate.prompts import CHAT_INSTRUCTION, PROMPT_STYLES, chat_messages, rg_prompt, strip_answer_prefix
from mixtral_ft.generate.resume import ResumableOutput

# Input fields that are renamed or rebuilt in the output row; every other field is copied.
_CONSUMED = {"answer"}


@dataclass(frozen=True)
class GenerateConfig:
    data: Path
    out: Path
    backend: str
    model: str
    adapter: str | None = None
    prompt_style: str = "rg"
    params: GenerationParams = field(default_factory=GenerationParams)
    backend_options: dict[str, Any] = field(default_factory=dict)
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
    missing_prefix: int
    first_error: str | None


def adapter_sha256(adapter: str | None) -> str | None:
    """SHA-256 of a PEFT adapter's weights (``adapter_model.safetensors`` or ``.bin``)."""
    if not adapter:
        return None
    from mixtral_ft.util.hashing import sha256_file

    weights = sorted(Path(adapter).glob("adapter_model.*"))
    return sha256_file(weights[0]) if weights else None


def load_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Test rows (docs/formats.md §1) checked for what generation needs; every problem at once."""
    from mixtral_ft.util.jsonl import read_jsonl

    rows, problems, seen = [], [], {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        name = str(path)
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
        rows.append(row)
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError([Problem(str(path), None, None, "no rows")])
    return rows[:limit] if limit is not None else rows


def settings_for(cfg: GenerateConfig) -> dict[str, Any]:
    """What shapes the output rows; a resumed run must match it exactly."""
    return {
        "backend": cfg.backend,
        "model": cfg.model,
        "adapter": cfg.adapter,
        "adapter_sha256": adapter_sha256(cfg.adapter),
        "prompt": cfg.prompt_style,
        "chat_instruction": CHAT_INSTRUCTION if cfg.prompt_style == "chat" else None,
        "generation": cfg.params.to_dict(),
        "endpoint_mode": cfg.backend_options.get("mode"),
    }


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
    out = {
        "id": row["id"],
        "source": row.get("source"),
        "group": row.get("group"),
        "context": row["context"],
        "question": row["question"],
        "reference_answer": row.get("answer"),
        "response": response,
        "model": {"name": cfg.model, "adapter": cfg.adapter, "backend": cfg.backend, "prompt": cfg.prompt_style},
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


def _manifest(cfg, settings, identity, data_sha, n_rows, summary: dict | None, started: str) -> dict[str, Any]:
    from mixtral_ft.util.hashing import sha256_json
    from mixtral_ft.util.provenance import command_line, environment, now_iso

    return {
        "kind": "mixft-generate",
        "command": command_line(),
        "started": started,
        "updated": now_iso(),
        "settings": settings,
        "settings_sha256": sha256_json(settings),
        "backend": identity,
        "quantization": (identity or {}).get("quantization"),
        "data": {"path": str(cfg.data), "sha256": data_sha, "rows": n_rows, "limit": cfg.limit},
        "output": str(cfg.out),
        "summary": summary,
        "environment": environment(),
    }


def generate(cfg: GenerateConfig, backend=None) -> GenerateSummary:
    """Generate for every row of ``cfg.data`` not yet in ``cfg.out``; return the run's counts.

    ``backend`` may be passed in (tests, benchmarks); otherwise it is built from ``cfg``.
    """
    from mixtral_ft.backends import backend_factory, create_backend
    from mixtral_ft.generate.loop import drive
    from mixtral_ft.util.hashing import sha256_file, sha256_json
    from mixtral_ft.util.provenance import now_iso, write_manifest

    if cfg.prompt_style not in PROMPT_STYLES:
        raise UsageError(f"Unknown prompt style '{cfg.prompt_style}'. Available: {', '.join(PROMPT_STYLES)}")
    backend_factory(cfg.backend)  # unknown names fail before any work
    if cfg.backend == "openai" and cfg.adapter:
        raise UsageError("--adapter is for the hf backend; an endpoint serves its adapter under its own model name")
    if cfg.limit is not None and cfg.limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {cfg.limit})")
    rows = load_rows(cfg.data, cfg.limit)
    settings = settings_for(cfg)
    output = ResumableOutput(cfg.out, sha256_json(settings), force=cfg.force)
    pending = [r for r in rows if r["id"] not in output.done]
    started = (output.previous_manifest() or {}).get("started") or now_iso()
    data_sha = sha256_file(cfg.data)
    by_id = {r["id"]: r for r in rows}
    stats = None
    if pending:
        if backend is None:
            opts = dict(cfg.backend_options)
            if cfg.backend == "hf":
                opts.update(model=cfg.model, adapter=cfg.adapter)
            else:
                opts.update(model=cfg.model)
            backend = create_backend(cfg.backend, **opts)
        identity = backend.identity()
        write_manifest(output.manifest_path, _manifest(cfg, settings, identity, data_sha, len(rows), None, started))
        requests = [make_request(r, cfg.prompt_style) for r in pending]
        missing_prefix = 0

        def make_row(result: Result) -> dict[str, Any]:
            nonlocal missing_prefix
            row = output_row(by_id[result.key], result, cfg)
            missing_prefix += row["answer_prefix"] is False
            return row

        try:
            with output:
                stats = drive(backend, requests, cfg.params, output, make_row, desc="generate")
        finally:
            backend.close()
    else:
        identity = (output.previous_manifest() or {}).get("backend")
        missing_prefix = 0
    summary = GenerateSummary(
        out=cfg.out,
        total=len(rows),
        skipped=len(rows) - len(pending),
        retried=output.retrying,
        written=stats.written if stats else 0,
        failed=stats.failed if stats else 0,
        new_tokens=stats.new_tokens if stats else 0,
        wall_s=stats.wall_s if stats else 0.0,
        tokens_per_s=stats.tokens_per_s if stats else 0.0,
        missing_prefix=missing_prefix,
        first_error=stats.first_error if stats else None,
    )
    manifest_summary = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in summary.__dict__.items()}
    write_manifest(output.manifest_path, _manifest(cfg, settings, identity, data_sha, len(rows), manifest_summary, started))
    return summary
