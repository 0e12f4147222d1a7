"""Token counts of a prepared training split, and how Axolotl batches them into micro batches.

Rows are tokenized as Axolotl builds them (``data.lengths.AxolotlInstructionTokenizer``) with the base
model's tokenizer when it is a local directory, else estimated; rows Axolotl drops as too long are left
out. Counts are cached by the file's SHA-256, the tokenizer and the sequence length. Axolotl's
tokenization, filtering and packing, with file and line: docs/design/tokenization.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.data.lengths import AxolotlInstructionTokenizer, char_estimate
from mixtral_ft.data.prompts import context_qa_v2_prompt, context_qa_v2_response
from mixtral_ft.errors import UsageError
from mixtral_ft.plan import measure
from mixtral_ft.util.hashing import sha256_file
from mixtral_ft.util.jsonl import read_jsonl

PACK_SEED = 42  # Axolotl's default seed; the shuffled order only moves the bin count by a few
MAX_ROWS_PER_BIN = 200  # sample_packing_bin_size default (axolotl/utils/schemas/config.py ~706)


@dataclass
class DataTokens:
    """Per-row token lengths of a training split (after Axolotl's length filter)."""

    path: str
    rows: int
    lengths: list[int]
    dropped: int  # rows longer than sequence_len that Axolotl drops
    truncated: int
    method: str  # "tokenizer" or "estimate (4 characters per token)"
    tokenizer: str | None
    sequence_len: int
    trained_tokens: int | None = None  # tokens with a label, when tokenized
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def as_dict(self) -> dict[str, Any]:
        n = len(self.lengths)
        srt = sorted(self.lengths)
        return {
            "path": self.path,
            "rows": self.rows,
            "kept_rows": n,
            "dropped_rows": self.dropped,
            "truncated_rows": self.truncated,
            "tokens": self.tokens,
            "mean_tokens": round(self.tokens / n, 1) if n else 0,
            "p50_tokens": srt[n // 2] if n else 0,
            "max_tokens": srt[-1] if n else 0,
            "method": self.method,
            "tokenizer": self.tokenizer,
            "sequence_len": self.sequence_len,
            "notes": self.notes,
        }


def _pairs(task: str, rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    if task == "rg":
        return [
            (
                context_qa_v2_prompt(str(r.get("context", "")), str(r.get("question", ""))),
                context_qa_v2_response(str(r.get("answer", ""))),
            )
            for r in rows
        ]
    return [(str(r.get("prompt", "")), str(r.get("completion", ""))) for r in rows]


def tokenizer_dir(base_model: str) -> Path | None:
    """The base model's local directory when it holds a tokenizer."""
    path = Path(str(base_model)).expanduser()
    if path.is_dir() and any(
        (path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        return path
    return None


def _tokens_cache_key(path: Path, task: str, tok_dir: Path | None, sequence_len: int) -> str:

    body = [sha256_file(path), task, str(tok_dir.resolve()) if tok_dir else None, sequence_len]
    return "tokens-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def _row_lengths(task: str, path: Path, tok_dir: Path | None) -> dict[str, Any]:
    """Every row's token length (untruncated, so over-long rows show their real length): tokenized as
    Axolotl builds the row when ``tok_dir`` holds the tokenizer, else estimated from its characters."""
    pairs = _pairs(task, list(read_jsonl(path)))
    trained = None
    if tok_dir is not None:
        tok = AxolotlInstructionTokenizer(tok_dir, 10**9)
        lengths, trained = [], 0
        for i in range(0, len(pairs), 256):
            for ids, labels in tok.tokenize_batch(pairs[i : i + 256]):
                lengths.append(len(ids))
                trained += sum(1 for x in labels if x != -100)
        method = "tokenizer"
    else:
        lengths = [char_estimate(p, r) for p, r in pairs]
        method = "estimate (4 characters per token)"
    return {
        "lengths": lengths,
        "method": method,
        "tokenizer": str(tok_dir) if tok_dir else None,
        "trained_tokens": trained,
    }


def _length_filter(lengths: list[int], sequence_len: int, strategy: str) -> tuple[list[int], int, int]:
    """Axolotl's length filter: (kept lengths, dropped, truncated). Rows over ``sequence_len`` are dropped
    (``drop``) or cut (``truncate``); rows under 2 tokens are dropped (``min_sample_len``)."""
    kept, dropped, truncated = [], 0, 0
    for n in lengths:
        if n > sequence_len:
            if strategy == "truncate":
                kept.append(sequence_len)
                truncated += 1
            else:
                dropped += 1
            continue
        if n >= 2:  # min_sample_len default 2
            kept.append(n)
    return kept, dropped, truncated


def count_tokens(
    task: str,
    data_dir: Path,
    base_model: str,
    sequence_len: int,
    excess_length_strategy: str = "drop",
    use_cache: bool = True,
) -> DataTokens:
    """Token lengths of ``data_dir/train.jsonl`` as Axolotl will see them."""
    path = Path(data_dir) / "train.jsonl"
    if not path.exists():
        raise UsageError(f"{path}: not found; `mixft prepare {task} --out {data_dir}` writes train.jsonl")
    tok_dir = tokenizer_dir(base_model)
    key = _tokens_cache_key(path, task, tok_dir, sequence_len)
    raw = measure._read_cache(key) if use_cache else None
    if raw is None:
        raw = _row_lengths(task, path, tok_dir)
        measure._write_cache(key, raw)
    lengths = raw["lengths"]
    kept, dropped, truncated = _length_filter(lengths, sequence_len, excess_length_strategy)
    notes = []
    if raw["method"] != "tokenizer":
        notes.append(
            f"token counts are an estimate (4 characters per token): {base_model} is not a local "
            "directory with a tokenizer"
        )
    if dropped:
        notes.append(f"{dropped} row(s) longer than {sequence_len} tokens are dropped by Axolotl")
    return DataTokens(
        path=str(path),
        rows=len(lengths),
        lengths=kept,
        dropped=dropped,
        truncated=truncated,
        method=raw["method"],
        tokenizer=raw["tokenizer"],
        sequence_len=sequence_len,
        trained_tokens=raw.get("trained_tokens"),
        notes=notes,
    )


def pack_first_fit(lengths: list[int], capacity: int, seed: int = PACK_SEED) -> list[list[int]]:
    """Bins of total length <= ``capacity``: first fit in a seeded shuffled order (Axolotl's
    ``pack_group`` over a random sampler; at most :data:`MAX_ROWS_PER_BIN` rows per bin)."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    space: list[int] = []
    bins: list[list[int]] = []
    # Bins with room for at least the shortest row, scanned in creation order (first fit).
    for idx in order:
        size = lengths[idx]
        for b, free in enumerate(space):
            if free >= size and len(bins[b]) < MAX_ROWS_PER_BIN:
                space[b] -= size
                bins[b].append(size)
                break
        else:
            space.append(capacity - size)
            bins.append([size])
    return bins


@dataclass
class Batching:
    micro_batches_per_epoch: int  # per rank
    token_slots_per_micro_batch: int  # positions computed, padding included
    tokens_per_epoch: int  # real tokens
    sequences_per_micro_batch: float
    attention_pairs_per_epoch: float  # sum over sequences of len^2 (for attention FLOPs)
    packing_efficiency: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def batching(data: DataTokens, setup) -> Batching:
    """How many micro batches one epoch is, and what each one computes."""
    lengths = data.lengths
    world = setup.world_size
    if setup.sample_packing:
        # With flash attention one micro batch is one bin of micro_batch_size x sequence_len tokens
        # (multipack_real_batches off); otherwise micro_batch_size bins of sequence_len tokens, and
        # the last incomplete batch of bins is dropped (drop_last=True).
        real_batches = setup.attention_kind != "flash"
        capacity = setup.sequence_len if real_batches else setup.micro_batch_size * setup.sequence_len
        sample = lengths
        scale = 1.0
        if len(lengths) > 20000:  # first fit is quadratic in pure Python: pack a seeded sample, scale up
            rng = random.Random(PACK_SEED)
            sample = rng.sample(lengths, 20000)
            scale = len(lengths) / 20000
        bins = pack_first_fit(sample, capacity)
        n_bins = int(len(bins) * scale)
        batches = n_bins // setup.micro_batch_size if real_batches else n_bins
        per_rank = batches // world  # drop_last across ranks
        slots = setup.micro_batch_size * setup.sequence_len
        used = sum(sample) * scale
        return Batching(
            per_rank,
            slots,
            data.tokens,
            len(lengths) / max(batches, 1),
            float(sum(x * x for x in lengths)),
            used / max(n_bins * capacity, 1),
            "first-fit packing into "
            + ("micro_batch_size bins of sequence_len" if real_batches else "micro_batch_size x sequence_len bins")
            + (" (a 20,000-row sample, scaled)" if scale != 1.0 else ""),
        )
    b = setup.micro_batch_size
    order = list(range(len(lengths)))
    random.Random(PACK_SEED).shuffle(order)
    batches = [order[i : i + b] for i in range(0, len(order), b)]
    if setup.pad_to_sequence_len:
        slots = b * setup.sequence_len
    else:
        slots = int(sum(max(lengths[i] for i in bt) * b for bt in batches) / max(len(batches), 1))
    per_rank = math.ceil(len(batches) / world)
    return Batching(
        per_rank,
        slots,
        data.tokens,
        float(b),
        float(sum(x * x for x in lengths)),
        data.tokens / max(len(batches) * slots, 1),
        "padded batches" + (" to sequence_len" if setup.pad_to_sequence_len else " to the longest row"),
    )
