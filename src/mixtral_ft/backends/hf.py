"""In-process generation with transformers: a base model directory plus an optional PEFT
adapter directory (or a merged model), batched with left padding, greedy by default.

Prompts are tokenized exactly as Axolotl tokenizes the prompt part of a training row
(``PromptTokenizingStrategy._tokenize(prompt, add_eos_token=False)``): ``tokenizer(text)``
with the tokenizer's own special tokens (BOS for Mistral/Llama tokenizers) and no EOS. The
completion the model was trained on followed those ids directly, so generation continues
from exactly the place training taught it to.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mixtral_ft.backends.base import GenerationParams, Request, Result
from mixtral_ft.errors import MissingDependencyError, UsageError
from mixtral_ft.models.loading import load_for_inference
from mixtral_ft.util.hashing import adapter_sha256, sha256_file


def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a raw-text prompt as Axolotl builds them for training (BOS, no EOS)."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def chat_token_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a chat rendered with the tokenizer's chat template, ready for the reply.

    The template writes its own BOS where the model expects one, so no special tokens are
    added on top of it.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("--prompt chat: this model's tokenizer has no chat template; use --prompt rg")
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; say whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _RecordLogprobs:
    """A logits processor that keeps, for every step and row, the log-probabilities of a few
    token ids (cheap enough to keep for every step; used to score verdict tokens)."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids
        self.steps: list[list[list[float]]] = []

    def __call__(self, input_ids, scores):
        import torch

        lp = torch.log_softmax(scores.float(), dim=-1)[:, self.token_ids]
        self.steps.append(lp.tolist())
        return scores


class HFBackend:
    """transformers ``generate`` in this process. See the module docstring for prompt handling."""

    name = "hf"

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        batch_size: int = 8,
        load_in_4bit: bool = False,
        record_token_ids: list[int] | None = None,
    ):
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(
                "the hf backend needs torch and transformers: pip install 'mixtral-ft[train]'"
            ) from e
        if batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        self.load_in_4bit = load_in_4bit
        self.record_token_ids = record_token_ids
        self._load()

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        loaded = load_for_inference(self.model_name, adapter=self.adapter, load_in_4bit=self.load_in_4bit)
        self.model, self.tokenizer, self.layout = loaded.model, loaded.tokenizer, loaded.layout
        self.device = loaded.layout.device
        self.quantization = loaded.quantization
        self.lora_modules = loaded.lora_modules
        gen_eos = self.model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        if not eos:
            raise UsageError(f"--model {self.model_name}: neither the tokenizer nor the model names an EOS token")
        self.eos_ids = sorted(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    def identity(self) -> dict[str, Any]:
        adapter_sha = adapter_sha256(self.adapter)
        config = Path(self.model_name) / "config.json"
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_config_sha256": sha256_file(config) if config.exists() else None,
            "adapter": self.adapter,
            "adapter_sha256": adapter_sha,
            "load_in_4bit": self.load_in_4bit,
            "device": self.device,
            "batch_size": self.batch_size,
            "load": self.layout.to_dict(),
            "quantization": self.quantization,
            "lora_modules": len(self.lora_modules),
            "lora_targets": sorted({name.rpartition(".")[2] for name in self.lora_modules}),
        }

    def encode(self, request: Request) -> list[int]:
        if request.prompt is not None:
            return prompt_token_ids(self.tokenizer, request.prompt)
        return chat_token_ids(self.tokenizer, list(request.messages or ()))

    # ------------------------------------------------------------------ generation

    def run(self, requests: Iterable[Request], params: GenerationParams) -> Iterator[Result]:
        """Generate for every request, longest prompts first, one batch at a time."""
        import torch

        encoded = [(r, self.encode(r)) for r in requests]
        encoded.sort(key=lambda item: -len(item[1]))
        torch.manual_seed(params.seed)
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start : start + self.batch_size]
            yield from self._generate_batch(batch, params)

    def _generate_batch(self, batch: list[tuple[Request, list[int]]], params: GenerationParams) -> list[Result]:
        import torch
        from transformers import LogitsProcessorList

        width = max(len(ids) for _, ids in batch)
        input_ids = torch.tensor(
            [[self.pad_id] * (width - len(ids)) + ids for _, ids in batch], device=self.model.device
        )
        attention = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch], device=self.model.device
        )
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_ids,
            "do_sample": not params.greedy,
        }
        if params.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        recorder = None
        if self.record_token_ids:
            recorder = _RecordLogprobs(self.record_token_ids)
            kwargs["logits_processor"] = LogitsProcessorList([recorder])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        latency = time.perf_counter() - t0
        new = out[:, width:].tolist()
        results = []
        for row, ((request, ids), tokens) in enumerate(zip(batch, new)):
            end = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
            if end is not None:
                kept, n_new, finish = tokens[:end], end + 1, "stop"
            else:
                kept = list(tokens)
                while kept and kept[-1] == self.pad_id:
                    kept.pop()
                n_new = len(kept)
                finish = "length" if n_new >= params.max_new_tokens else "stop"
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            text, stopped = truncate_at_stop(text, params.stop)
            if stopped:
                finish = "stop"
            extra: dict[str, Any] = {}
            if recorder is not None:
                extra["token_ids"] = kept
                extra["logprobs"] = [step[row] for step in recorder.steps[: len(kept)]]
            results.append(
                Result(
                    request.key,
                    text,
                    n_prompt_tokens=len(ids),
                    n_new_tokens=n_new,
                    latency_s=round(latency, 4),
                    finish_reason=finish,
                    extra=extra,
                )
            )
        return results

    def close(self) -> None:
        self.model = None
