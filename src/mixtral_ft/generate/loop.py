"""The loop shared by ``generate`` and ``judge``: send requests, append one row per result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mixtral_ft.backends.base import GenerationParams, Request, Result
from mixtral_ft.generate.resume import ResumableOutput
from mixtral_ft.util.progress import ProgressBar


@dataclass
class RunStats:
    written: int = 0
    failed: int = 0
    new_tokens: int = 0
    wall_s: float = 0.0
    first_error: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {"written": self.written, "failed": self.failed, "new_tokens": self.new_tokens,
                "wall_s": round(self.wall_s, 3), "tokens_per_s": round(self.tokens_per_s, 2)}


def drive(
    backend,
    requests: list[Request],
    params: GenerationParams,
    output: ResumableOutput,
    make_row: Callable[[Result], dict],
    desc: str,
) -> RunStats:
    """Run ``requests`` through ``backend`` and append ``make_row(result)`` for each result."""
    stats = RunStats()
    t0 = time.perf_counter()
    with ProgressBar(total=len(requests), desc=desc, unit="item") as bar:
        for result in backend.run(requests, params):
            output.append(make_row(result))
            stats.written += 1
            if result.ok:
                stats.new_tokens += result.n_new_tokens or 0
            else:
                stats.failed += 1
                stats.first_error = stats.first_error or f"{result.key}: {result.error}"
            bar.update(1)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(tok_s=f"{stats.new_tokens / elapsed:.1f}" if elapsed else "0", failed=stats.failed)
    stats.wall_s = time.perf_counter() - t0
    return stats
