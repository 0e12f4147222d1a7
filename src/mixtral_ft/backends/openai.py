"""One client for every OpenAI-compatible endpoint (vLLM, ``transformers serve``, llama.cpp's
server, OpenAI): base URL + model name, ``completions`` or ``chat`` mode, with retries, a request cap
and the API key kept out of every output (:class:`OpenAIBackend`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from mixtral_ft.backends.base import GenerationParams, Request, Result
from mixtral_ft.choices import EndpointMode, values
from mixtral_ft.errors import UsageError
from mixtral_ft.util.provenance import scrub_text

MODES = values(EndpointMode)
RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter over an exponential
    ceiling, or the server's ``Retry-After`` when it names a longer wait (both capped)."""
    ceiling = min(cap, base * (2**attempt))
    delay = rng.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(cap, retry_after))
    return delay


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _redact_url(url: str) -> str:
    """The URL as recorded: credentials (``user:password@``) and secret-looking query values as ``***``."""
    return scrub_text(url)


class OpenAIBackend:
    """Requests to ``{base_url}/completions`` or ``{base_url}/chat/completions``.

    - The API key is read from an environment variable (``OPENAI_API_KEY`` unless told otherwise)
      and only ever put in the ``Authorization`` header: never in a row, a manifest, a log line
      or an error message (error texts are scrubbed of it).
    - ``concurrency`` worker threads share one ``httpx.Client`` (its connection pool).
    - Retries with exponential backoff and full jitter on HTTP 429, 5xx, timeouts and connection
      errors (``Retry-After`` is honoured); other HTTP errors fail the item at once.
    - ``max_requests`` caps the HTTP requests of a run, retries included; once spent, the items
      not yet sent fail with that reason. Every failure is a ``Result`` with ``error`` set.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        mode: str = "completions",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 4,
        max_requests: int | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ):
        import httpx

        if mode not in MODES:
            raise UsageError(f"Unknown endpoint mode '{mode}'. Available: {', '.join(MODES)}")
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(
                f"--base-url {_redact_url(base_url)!r}: must start with http:// or https:// "
                "(e.g. http://127.0.0.1:8000/v1)"
            )
        if concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1 (got {concurrency})")
        if timeout <= 0:
            raise UsageError(f"--timeout must be positive (got {timeout})")
        if max_retries < 0:
            raise UsageError(f"--max-retries must be >= 0 (got {max_retries})")
        if max_requests is not None and max_requests < 1:
            raise UsageError(f"--max-requests must be at least 1 (got {max_requests})")
        if not api_key_env or not api_key_env.replace("_", "").isalnum():
            raise UsageError(f"--api-key-env {api_key_env!r}: not an environment variable name")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.mode = mode
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_requests = max_requests
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._key = os.environ.get(api_key_env) or None
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0

    def identity(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "base_url": _redact_url(self.base_url),
            "model": self.model,
            "mode": self.mode,
            "api_key_env": self.api_key_env,
            "api_key_set": self._key is not None,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout,
            "max_retries": self.max_retries,
            "max_requests": self.max_requests,
        }

    # ------------------------------------------------------------------ one request

    def request_body(self, request: Request, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        if self.mode == "completions":
            if request.prompt is None:
                raise UsageError(
                    "the completions endpoint takes a text prompt; use --endpoint-mode chat for chat prompts"
                )
            body["prompt"] = request.prompt
        else:
            body["messages"] = (
                list(request.messages)
                if request.messages is not None
                else [{"role": "user", "content": request.prompt}]
            )
        if not params.greedy:
            body.update(top_p=params.top_p, seed=params.seed)
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _take_budget(self) -> bool:
        with self._lock:
            if self.max_requests is not None and self.requests_sent >= self.max_requests:
                return False
            self.requests_sent += 1
            return True

    def _parse(self, key: str, data: Any, latency: float) -> Result:
        try:
            choice = data["choices"][0]
            text = choice["text"] if self.mode == "completions" else choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (KeyError, IndexError, TypeError) as e:
            return Result(
                key, None, latency_s=latency, error=self._scrub(f"malformed response ({e!r}): {str(data)[:200]}")
            )
        usage = data.get("usage") or {}
        return Result(
            key,
            text,
            n_prompt_tokens=usage.get("prompt_tokens"),
            n_new_tokens=usage.get("completion_tokens"),
            latency_s=round(latency, 4),
            finish_reason=choice.get("finish_reason"),
        )

    def complete(self, request: Request, params: GenerationParams, rng: random.Random | None = None) -> Result:
        """Send one request with retries; always returns a Result (``error`` set on failure)."""
        import httpx

        rng = rng or random.Random()
        body = self.request_body(request, params)
        url = f"{self.base_url}/{'completions' if self.mode == 'completions' else 'chat/completions'}"
        t0 = time.perf_counter()
        attempt = 0
        while True:
            if not self._take_budget():
                return Result(
                    request.key,
                    None,
                    latency_s=round(time.perf_counter() - t0, 4),
                    error=f"request budget used up (--max-requests {self.max_requests})",
                )
            retry_after = None
            try:
                resp = self._client.post(url, json=body)
            except httpx.TimeoutException:
                error, retryable = f"timed out after {self.timeout:g}s", True
            except httpx.TransportError as e:
                error, retryable = f"connection error ({type(e).__name__})", True
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        data = resp.text
                    return self._parse(request.key, data, time.perf_counter() - t0)
                error = f"HTTP {resp.status_code}: {resp.text[:200].strip()}"
                retryable = resp.status_code in RETRY_STATUS
                retry_after = _retry_after(resp.headers)
            if not retryable or attempt >= self.max_retries:
                return Result(
                    request.key,
                    None,
                    latency_s=round(time.perf_counter() - t0, 4),
                    error=self._scrub(f"{error} (after {attempt + 1} attempt(s))"),
                )
            with self._lock:
                self.retries += 1
            time.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_max, rng, retry_after))
            attempt += 1

    # ------------------------------------------------------------------ many requests

    def run(self, requests: Iterable[Request], params: GenerationParams) -> Iterator[Result]:
        """Results in completion order, with at most ``concurrency`` requests in flight."""
        seed_rng = random.Random(params.seed)
        pending = iter(requests)
        in_flight: set[Future] = set()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mixft-openai")
        finished = False

        def submit_next() -> bool:
            request = next(pending, None)
            if request is None:
                return False
            rng = random.Random(seed_rng.random())
            in_flight.add(pool.submit(self.complete, request, params, rng))
            return True

        try:
            while len(in_flight) < self.concurrency and submit_next():
                pass
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    in_flight.discard(future)
                    yield future.result()
                    submit_next()
            finished = True
        finally:
            for future in in_flight:
                future.cancel()
            # Stopped part-way (Ctrl-C, SIGTERM, a full disk): do not wait for requests in flight,
            # which can take up to --timeout; their threads end with the process.
            pool.shutdown(wait=finished, cancel_futures=True)

    def close(self) -> None:
        self._client.close()
