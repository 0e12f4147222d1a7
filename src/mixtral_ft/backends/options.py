"""``BackendOptions``: which backend runs the model, and its settings, as one checked object.

``mixft generate`` and ``mixft judge`` build it from one shared group of flags
(``cli/_backend_options.py``); library callers (the demo, benchmarks) build it directly. A flag
of the other backend is refused rather than ignored, so a command line never says more than
what ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mixtral_ft.backends import backend_factory, create_backend
from mixtral_ft.errors import UsageError
from mixtral_ft.util.provenance import query_secret, scrub_text

ENDPOINT_MODES = ("completions", "chat")


@dataclass(frozen=True)
class BackendOptions:
    """``name`` is ``hf`` (transformers in this process) or ``openai`` (an endpoint)."""

    name: str = "hf"
    model: str = ""
    adapter: str | None = None
    # hf
    batch_size: int = 8
    load_in_4bit: bool = False
    skip_plan_check: bool = False  # run even when the memory plan says the GPU is too small (docs/planning.md)
    # openai
    base_url: str | None = None
    endpoint_mode: str = "completions"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 120.0
    max_retries: int = 4
    max_requests: int | None = None

    def __post_init__(self) -> None:
        backend_factory(self.name)  # an unknown name fails here, with "Did you mean"
        if not self.model:
            raise UsageError("--model is required (hf: a model directory; openai: the served model name)")
        if self.name == "openai":
            if not self.base_url:
                raise UsageError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")

            if query_secret(self.base_url):
                raise UsageError(
                    f"--base-url {scrub_text(self.base_url)}: a key in the URL query would be written to "
                    "manifests and logs; put it in an environment variable and name it with --api-key-env "
                    f"(now {self.api_key_env}): mixft sends it as the Authorization header"
                )
            if self.load_in_4bit:
                raise UsageError("--load-in-4bit is for the hf backend; quantize on the server instead")
            if self.adapter:
                raise UsageError(
                    "--adapter is for the hf backend; an endpoint serves its adapter under its own model name"
                )
            if self.skip_plan_check:
                raise UsageError("--skip-plan-check is for the hf backend; nothing is planned for an endpoint")
            if self.endpoint_mode not in ENDPOINT_MODES:
                raise UsageError(
                    f"Unknown endpoint mode '{self.endpoint_mode}'. Available: {', '.join(ENDPOINT_MODES)}"
                )
        elif self.base_url:
            raise UsageError(f"--base-url is for the openai backend (this is --backend {self.name})")

    @property
    def mode(self) -> str | None:
        """The endpoint mode when it applies (openai), else None; part of a run's settings."""
        return self.endpoint_mode if self.name == "openai" else None

    def constructor_options(self) -> dict[str, Any]:
        """Keyword options for the backend class (see its constructor)."""
        if self.name == "openai":
            return {
                "base_url": self.base_url,
                "model": self.model,
                "mode": self.endpoint_mode,
                "api_key_env": self.api_key_env,
                "concurrency": self.concurrency,
                "timeout": self.timeout,
                "max_retries": self.max_retries,
                "max_requests": self.max_requests,
            }
        return {
            "model": self.model,
            "adapter": self.adapter,
            "batch_size": self.batch_size,
            "load_in_4bit": self.load_in_4bit,
        }

    def create(self):
        """Build the backend (for hf: loads the model)."""
        return create_backend(self.name, **self.constructor_options())
