"""Token lengths of training examples exactly as Axolotl builds instruction-style examples
(``AxolotlInstructionTokenizer``; a character estimate without a tokenizer), and ``LengthReport``,
the lengths both ``prepare`` commands write, with the rows Axolotl would drop as too long.
What Axolotl does, with file and line: docs/design/tokenization.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixtral_ft.errors import MissingDependencyError, UsageError

IGNORE_INDEX = -100
CHARS_PER_TOKEN = 4.0
ESTIMATE_RULE = "characters / 4 + 2 (no --tokenizer given)"
SIDES = ("train", "test")
_TOKENIZE_BATCH = 256
_OVER_IDS_SHOWN = 20
PERCENTILES = (50, 90, 95, 99, 100)
# The Axolotl release whose tokenization and long-row handling these follow (read in its source; a test
# keeps it equal to the `train` extra's pin): the lengths report names it.
AXOLOTL = "Axolotl 0.21.0"
AXOLOTL_LONG_ROWS = (
    f"{AXOLOTL} drops them by default (excess_length_strategy unset = 'drop'); "
    "'truncate' would cut them to sequence_len tokens, 'raise' would stop training"
)


def char_estimate(prompt: str, response: str) -> int:
    """Rough token count of prompt + response + BOS + EOS (4 characters per token)."""
    return char_estimate_from_count(len(prompt) + len(response))


def char_estimate_from_count(n_chars: int) -> int:
    """``char_estimate`` from the total character count of prompt + response."""
    return math.ceil(n_chars / CHARS_PER_TOKEN) + 2


class LengthStats:
    """A histogram of lengths: exact percentiles in memory bounded by distinct lengths."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.n = 0
        self.total = 0

    def add(self, length: int, count: int = 1) -> None:
        self.counts[length] += count
        self.n += count
        self.total += length * count

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile (p in 0..100); 0 when empty."""
        if not self.n:
            return 0
        rank = max(1, math.ceil(p / 100 * self.n))
        seen = 0
        for length in sorted(self.counts):
            seen += self.counts[length]
            if seen >= rank:
                return length
        return max(self.counts)

    def over(self, limit: int) -> int:
        return sum(c for length, c in self.counts.items() if length > limit)

    def summary(self, limit: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "mean": round(self.total / self.n, 1) if self.n else 0,
            **{f"p{p}": self.percentile(p) for p in PERCENTILES},
        }
        if limit is not None:
            out["over_sequence_len"] = self.over(limit)
        return out


class LengthReport:
    """Lengths of the rows a ``prepare`` command writes, per split: exact token counts with a
    tokenizer (batched), else the character estimate; the first ids longer than ``sequence_len``."""

    def __init__(self, sequence_len: int, tokenizer: str | Path | None = None):
        self.sequence_len = sequence_len
        self.tokenizer_name = str(tokenizer) if tokenizer is not None else None
        self._tok = AxolotlInstructionTokenizer(tokenizer, sequence_len) if tokenizer is not None else None
        self.stats = {side: LengthStats() for side in SIDES}
        self.over_ids: list[str] = []
        self._pending: dict[str, list[tuple[str, str, str]]] = {side: [] for side in SIDES}
        self.char_limit = (sequence_len - 2) * CHARS_PER_TOKEN  # more characters: over sequence_len

    @property
    def exact(self) -> bool:
        return self._tok is not None

    def add_text(self, side: str, row_id: str, prompt: str, response: str) -> None:
        """One row as Axolotl builds it from ``prompt`` and ``response``."""
        if self._tok is None:
            self.add_chars(side, len(prompt) + len(response), row_id)
            return
        pending = self._pending[side]
        pending.append((row_id, prompt, response))
        if len(pending) >= _TOKENIZE_BATCH:
            self._flush(side)

    def add_chars(self, side: str, n_chars: int, row_id: str | None = None, count: int = 1) -> None:
        """``count`` rows of ``n_chars`` characters (prompt + response), estimated; ``row_id`` of
        one row, needed only when it is longer than ``sequence_len`` (more than ``char_limit`` characters)."""
        n = char_estimate_from_count(n_chars)
        self.stats[side].add(n, count)
        if n > self.sequence_len and row_id is not None and len(self.over_ids) < _OVER_IDS_SHOWN:
            self.over_ids.append(row_id)

    def _flush(self, side: str) -> None:
        pending = self._pending[side]
        if not pending:
            return
        assert self._tok is not None  # rows are pending only when there is a tokenizer (add_text)
        for (row_id, _, _), n in zip(pending, self._tok.lengths([(p, r) for _, p, r in pending])):
            self.stats[side].add(n)
            if n > self.sequence_len and len(self.over_ids) < _OVER_IDS_SHOWN:
                self.over_ids.append(row_id)
        pending.clear()

    def to_json(self) -> dict[str, Any]:
        """``kind``, the figures over all rows, the same per split, and the first long rows' ids."""
        if self._tok is not None:
            for side in SIDES:
                self._flush(side)
        total = LengthStats()
        for stats in self.stats.values():
            for length, count in stats.counts.items():
                total.add(length, count)
        return {
            "kind": "tokens" if self.exact else "estimate",
            "tokenizer": self.tokenizer_name,
            "rule": f"{AXOLOTL} instruction tokenization" if self.exact else ESTIMATE_RULE,
            "sequence_len": self.sequence_len,
            **total.summary(self.sequence_len),
            "by_split": {side: stats.summary(self.sequence_len) for side, stats in self.stats.items()},
            "over_sequence_len_ids": list(self.over_ids),
            "long_rows": AXOLOTL_LONG_ROWS,
        }


def format_lengths(report: dict[str, Any]) -> list[str]:
    """The summary lines both ``prepare`` commands print about a ``LengthReport.to_json()``."""
    if not report.get("n"):
        return []
    what = (
        f"tokens ({report['tokenizer']})"
        if report["kind"] == "tokens"
        else "tokens, ESTIMATED from characters (pass --tokenizer for exact counts)"
    )
    over = report.get("over_sequence_len", 0)
    return [
        f"lengths     {what}: p50 {report['p50']:,}, p95 {report['p95']:,}, max {report['p100']:,}",
        f"            {over:,} row(s) longer than sequence_len {report['sequence_len']:,}"
        + (f": {AXOLOTL_LONG_ROWS}" if over else ""),
    ]


class AxolotlInstructionTokenizer:
    """Tokenizes (prompt, response) pairs as Axolotl's instruction strategies do.

    Needs ``transformers`` (imported here, never at module level). ``tokenizer`` is a local
    directory (or an already loaded tokenizer); nothing is downloaded.
    """

    def __init__(self, tokenizer: str | Path | Any, sequence_len: int):
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.sequence_len = sequence_len

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.sequence_len, padding=False, return_tensors=None
        )
        return [list(ids) for ids in enc["input_ids"]]

    def tokenize_batch(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """``(input_ids, labels)`` for each ``(prompt, response)``, prompt masked."""
        tok = self.tokenizer
        prompts = self._encode([p for p, _ in pairs])
        responses = self._encode([r for _, r in pairs])
        out = []
        for (prompt_text, response_text), p_ids, r_ids in zip(pairs, prompts, responses):
            if not prompt_text:
                p_ids = []
            if not response_text:
                r_ids = []
            elif r_ids:
                if r_ids[-1] != tok.eos_token_id and len(r_ids) < self.sequence_len:
                    r_ids = r_ids + [tok.eos_token_id]
                if r_ids[0] == tok.bos_token_id:
                    r_ids = r_ids[1:]
            out.append((p_ids + r_ids, [IGNORE_INDEX] * len(p_ids) + r_ids))
        return out

    def lengths(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        return [len(ids) for ids, _ in self.tokenize_batch(pairs)]


def load_tokenizer(path: str | Path):
    """A tokenizer from a local directory; a clear error when it is not one."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: tokenizer directory not found (give a local directory; nothing is downloaded)")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("--tokenizer needs transformers: pip install 'mixtral-ft[train]'") from None
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot load a tokenizer from it: {e}") from None
