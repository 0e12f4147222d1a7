"""What every backend takes and returns: one request per item, one result per item.

A backend turns requests into results and yields each result as soon as it exists, so the
caller can append it to a resumable output file. A request that fails (HTTP errors after the
retries, a request budget used up) still yields a result, with ``error`` set: items are never
dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from mixtral_ft.errors import UsageError


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings shared by all backends (recorded in every output row).

    ``temperature == 0`` means greedy decoding (the default); ``seed`` makes sampling repeatable.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens})")
        if self.temperature < 0:
            raise UsageError(f"--temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if any(not s for s in self.stop):
            raise UsageError("--stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["do_sample"] = not self.greedy
        return d


@dataclass(frozen=True)
class Request:
    """One item to generate for. Exactly one of ``prompt`` (raw text, tokenized the way Axolotl
    tokenizes a prompt: the tokenizer's own special tokens, no EOS) or ``messages`` (chat)."""

    key: str
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a Request needs exactly one of prompt or messages")


@dataclass
class Result:
    """The outcome for one request; ``error`` is set (and ``text`` is None) when it failed."""

    key: str
    text: str | None
    n_prompt_tokens: int | None = None
    n_new_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class Backend(Protocol):
    """A named way to run a model. ``identity()`` goes into every row and manifest."""

    name: str

    def identity(self) -> dict[str, Any]: ...

    def run(self, requests: Iterable[Request], params: GenerationParams) -> Iterator[Result]: ...

    def close(self) -> None: ...
