"""Measurements the planner cannot compute by formula, taken on the CPU in seconds, and cached.

For a training setup (:class:`~mixtral_ft.plan.setup.TrainSetup`) the real model class is built
at full width with 2 and 3 decoder layers (FakeTensors; :mod:`model_build`), with the loader's
4-bit storage, Axolotl's dtype casts, real PEFT LoRA, the configured gradient checkpointing and
attention, and one training step (forward, loss, backward) is run at the planned micro batch and
sequence length under :mod:`sim`'s instruments. A FakeTensor step costs the same at 512 or 16K
tokens, so each size is simulated rather than extrapolated; only depth is extrapolated, linearly
from 2 and 3 layers (every further layer keeps the same tensors as the third; the first one is
not a model for that, since what the embedding leaves alive is counted once).

For each phase of the step (``forward``; ``head``: final norm, output head, loss and their
backward; ``layers_backward``: recompute and backward of the decoder layers) the simulator
records the peak of live bytes and its split into activations, logits, dequantization buffers
and gradients.

Cache: ``$MIXFT_CACHE/plan`` (default ``~/.cache/mixft/plan``), one JSON file per model and
settings, holding every size measured so far; the key covers the model config, every setting
that changes the step and the versions of torch, transformers, peft, bitsandbytes and this
module's :data:`METHOD_VERSION`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mixtral_ft.plan.arch import ModelArch

METHOD_VERSION = 2
SIM_LAYERS = (2, 3)  # depths simulated; further layers add what the third added
LA, LB = (f"L{n}" for n in SIM_LAYERS)
PHASES = ("forward", "head", "layers_backward")
TRANSIENT_TAGS = ("activations", "logits", "dequant")
_VERSIONED = ("torch", "transformers", "peft", "bitsandbytes")


def cache_dir() -> Path:
    return Path(os.environ.get("MIXFT_CACHE", Path.home() / ".cache" / "mixft")) / "plan"


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def cache_key(kind: str, arch: ModelArch, settings: dict[str, Any]) -> str:
    body = {"kind": kind, "method": METHOD_VERSION, "arch": arch.fingerprint(), "settings": settings,
            "versions": package_versions(), "layers": SIM_LAYERS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache(key: str) -> dict[str, Any] | None:
    path = cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_cache(key: str, data: dict[str, Any]) -> None:
    from mixtral_ft.util.atomic import atomic_write_text

    try:
        atomic_write_text(cache_dir() / f"{key}.json", json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only cache only costs the next plan the measurement again


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the libraries' warnings while measuring (import chatter, the flash-attn dtype cast,
    use_cache vs checkpointing): the plan states its own assumptions."""
    import logging
    import warnings

    names = ("torch", "torchao", "bitsandbytes", "transformers", "peft", "accelerate")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
    except ImportError:
        hf_logging = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)
        if hf_logging is not None:
            hf_logging.set_verbosity(hf_level)


def training_settings(setup) -> dict[str, Any]:
    """The settings of a :class:`TrainSetup` that change what one step holds (not its sizes)."""
    keep = ("adapter", "load_in_4bit", "load_in_8bit", "quantize_moe_experts", "lora", "compute_dtype",
            "mixed_precision", "embeddings_skip_upcast", "gradient_checkpointing", "use_reentrant",
            "attn_implementation", "experts_implementation", "model_config_overrides")
    d = setup.as_dict()
    return {k: d[k] for k in keep}


# ----------------------------------------------------------------------------- building


def _lora_targets(model, lora) -> list[str]:
    if lora.target_modules and not lora.target_linear:
        return list(lora.target_modules)
    import torch

    names = set(lora.target_modules)
    for name, module in model.named_modules():
        cls = type(module).__name__
        if isinstance(module, torch.nn.Linear) or "Linear" in cls:
            names.add(name.split(".")[-1])
    names.discard("lm_head")
    return sorted(names)


def build_training_model(arch: ModelArch, setup, layers: int, fake: bool = True):
    """The full-width model of ``setup`` with ``layers`` decoder layers, ready to train: FakeTensors,
    or with ``fake=False`` real tensors (for the tests that check the simulation against a real step)."""
    import contextlib

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mixtral_ft.plan.loadplan import training_decisions
    from mixtral_ft.plan.model_build import build_meta_model, materialize

    decisions = training_decisions(setup)
    overrides = dict(setup.model_config_overrides)
    overrides["num_hidden_layers"] = layers
    model = build_meta_model(arch, decisions, overrides, attn_implementation="eager")
    attn = "flash_attention_2" if setup.attention_kind == "flash" else setup.attn_implementation
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation_internal"):
            cfg._attn_implementation_internal = attn
    if setup.experts_implementation:
        model.set_experts_implementation(setup.experts_implementation)
    for p in model.parameters():
        p.requires_grad_(False)
    if setup.checkpointing_mode != "none":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": setup.use_reentrant})
        model.enable_input_require_grads()
    if setup.lora is not None:
        # On the meta model, as Axolotl applies it to the loaded one: PEFT keeps meta adapters
        # where it creates them (fp32 nn.Linear) and only upcasts 16-bit ones, so the adapter
        # dtype is PEFT's decision; materialize then gives every tensor its storage.
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=setup.lora.r, lora_alpha=setup.lora.alpha, lora_dropout=setup.lora.dropout,
                            target_modules=_lora_targets(model, setup.lora),
                            target_parameters=list(setup.lora.target_parameters) or None,
                            modules_to_save=list(setup.lora.modules_to_save) or None,
                            bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    materialize(model, decisions, mode)
    lora_params = [p for p in model.parameters() if p.requires_grad]
    fake = mode if mode is not None else contextlib.nullcontext()
    model.train()
    return model, fake, lora_params, torch


def _inputs(torch, batch: int, seq: int, flash: bool) -> tuple[dict[str, Any], set]:
    ids = torch.zeros(batch, seq, dtype=torch.long)
    if flash:
        # Sample packing with flash attention: one row of all tokens, sequences told apart by
        # cu_seqlens (Axolotl's multipack collator + transformers' varlen path).
        ids = ids.reshape(1, batch * seq)
        kwargs = {"input_ids": ids, "labels": ids.clone(),
                  "position_ids": torch.zeros_like(ids),
                  "cu_seq_lens_q": torch.zeros(batch + 1, dtype=torch.int32),
                  "cu_seq_lens_k": torch.zeros(batch + 1, dtype=torch.int32),
                  "max_length_q": seq, "max_length_k": seq}
    else:
        kwargs = {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.zeros_like(ids)}
    from mixtral_ft.plan.sim import storage_keys

    return kwargs, storage_keys(v for v in kwargs.values() if hasattr(v, "untyped_storage"))


def _final_norm(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    return getattr(inner, "norm", None) or getattr(inner, "final_layernorm", None)


def simulate_training_step(model, fake, lora_params, torch, setup, vocab: int, batch: int, seq: int) -> dict[str, Any]:
    """One training step on the fake model: peak bytes per phase and tag, and saved-tensor bytes."""
    import contextlib

    from mixtral_ft.plan.sim import (
        MemoryTracker,
        SavedTensors,
        data_free_ops,
        flash_attention_model,
        model_storage_keys,
        sdpa_memory_model,
    )

    flash = setup.attention_kind == "flash"
    with fake:
        inputs, input_keys = _inputs(torch, batch, seq, flash)
    exclude = model_storage_keys(model) | input_keys
    tracker = MemoryTracker(vocab, exclude)
    saved = SavedTensors(exclude)
    layer_saved: dict[str, int] = {}
    norm = _final_norm(model)
    handles = []

    def at_head(module, args):
        layer_saved["bytes"] = saved.bytes
        layer_saved["dequant"] = sum(n for k, n in saved.saved.items() if tracker.live.get(k, (0, ""))[1] == "dequant")
        tracker.set_phase("head")
        x = args[0]
        if x.requires_grad:
            x.register_hook(lambda g: tracker.set_phase("layers_backward"))

    handles.append(norm.register_forward_pre_hook(at_head))
    for p in lora_params:
        handles.append(p.register_post_accumulate_grad_hook(
            lambda p: tracker.retag({p.grad.untyped_storage()._cdata}, "grads")))
    autocast = (torch.autocast("cpu", dtype=getattr(torch, setup.compute_dtype))
                if setup.mixed_precision and setup.compute_dtype != "float32" else contextlib.nullcontext())
    flash_ctx = (flash_attention_model() if flash else sdpa_memory_model() if setup.attention_kind == "sdpa"
                 else contextlib.nullcontext())
    try:
        with fake, flash_ctx, data_free_ops(), tracker, saved.recording():
            tracker.set_phase("forward")
            with autocast:
                loss = model(**inputs).loss  # the Trainer keeps only the loss: logits are freed before backward
            loss.backward()
            del loss
    finally:
        for h in handles:
            h.remove()
        for p in lora_params:
            p.grad = None
    return {"peaks": tracker.peaks, "saved_layers": layer_saved, "tokens": batch * seq, "batch": batch, "seq": seq}


# ----------------------------------------------------------------------------- measuring


def size_key(batch: int, seq: int) -> str:
    return f"{batch}x{seq}"


_SIMULATORS: dict[str, TrainingSimulator] = {}


def simulator_for(arch: ModelArch, setup) -> TrainingSimulator:
    """One simulator per model and settings in this process (plans of several sizes share the build)."""
    key = cache_key("train", arch, training_settings(setup))
    if key not in _SIMULATORS:
        _SIMULATORS[key] = TrainingSimulator(arch, setup)
    return _SIMULATORS[key]


class TrainingSimulator:
    """Fake models of one setup at the two simulated depths, built once, stepped at any size."""

    def __init__(self, arch: ModelArch, setup):
        self.arch = arch
        self.setup = setup
        self._models: dict[int, tuple] = {}

    def _model(self, layers: int):
        if layers not in self._models:
            self._models[layers] = build_training_model(self.arch, self.setup, layers)
        return self._models[layers]

    def lora_parameters(self) -> dict[str, Any]:
        """Element counts of every trainable tensor at the two simulated depths, and their dtype."""
        one, two = self._model(SIM_LAYERS[0])[2], self._model(SIM_LAYERS[1])[2]
        dtype = str(one[0].dtype).replace("torch.", "") if one else "float32"
        return {LA: [p.numel() for p in one], LB: [p.numel() for p in two], "dtype": dtype}

    def run(self, batch: int, seq: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for layers in SIM_LAYERS:
            model, fake, lora_params, torch = self._model(layers)
            r = simulate_training_step(model, fake, lora_params, torch, self.setup, self.arch.vocab_size, batch, seq)
            out[f"L{layers}"] = {"peaks": r["peaks"], "saved_layers": r["saved_layers"]}
        return out


def measure_training(arch: ModelArch, setup, sizes: list[tuple[int, int]], use_cache: bool = True,
                     simulator: TrainingSimulator | None = None) -> dict[str, Any]:
    """Per-phase peaks at the two simulated depths for each (micro batch, sequence length) in ``sizes``, from
    the cache when measured before. Also the trainable (LoRA) parameter count and dtype."""
    settings = training_settings(setup)
    key = cache_key("train", arch, settings)
    data = (_read_cache(key) if use_cache else None) or {
        "method_version": METHOD_VERSION, "settings": settings, "versions": package_versions(),
        "arch": arch.fingerprint(), "sizes": {}}
    missing = [s for s in sizes if size_key(*s) not in data["sizes"]]
    if missing or "lora" not in data:
        sim = simulator or simulator_for(arch, setup)
        with quiet():
            if "lora" not in data:
                data["lora"] = sim.lora_parameters()
            for batch, seq in missing:
                data["sizes"][size_key(batch, seq)] = sim.run(batch, seq)
        _write_cache(key, data)
    data["cache"] = {"key": key, "measured": [size_key(*s) for s in missing]}
    return data


def depth_split(first: dict[str, float], second: dict[str, float], layers: int,
                tags: tuple[str, ...] = TRANSIENT_TAGS + ("grads",)) -> dict[str, float]:
    """A phase's peak at ``layers`` layers, split by tag, from its peaks at the two simulated depths.

    The total grows linearly: every further layer keeps what the third one added (its checkpointed
    input, its KV cache, its router logits). The first layer is not a model for that (what the
    embedding leaves alive is counted once), hence depths 2 and 3. The split is the deeper run's,
    with the growth put on activations: logits and dequantization buffers are one layer's or the
    head's, whatever the depth. (Extrapolating each tag separately would not do: the moment of the
    peak, and so the split, can move between two runs.)"""
    t1, t2 = sum(first.get(t, 0) for t in tags), sum(second.get(t, 0) for t in tags)
    out = {t: float(second.get(t, 0)) for t in tags}
    out["activations"] = out.get("activations", 0.0) + (layers - SIM_LAYERS[1]) * (t2 - t1)
    return out


def at_depth(entry: dict[str, Any], layers: int) -> dict[str, dict[str, float]]:
    """Per phase and tag, the bytes at ``layers`` layers (:func:`depth_split`)."""
    one, two = entry[LA]["peaks"], entry[LB]["peaks"]
    return {phase: depth_split((one.get(phase) or {}).get("by_tag") or {}, (two.get(phase) or {}).get("by_tag") or {},
                               layers) for phase in PHASES}


def saved_per_layer(entry: dict[str, Any]) -> dict[str, float]:
    """Bytes autograd keeps per decoder layer until backward (what the third layer added)."""
    one, two = entry[LA]["saved_layers"], entry[LB]["saved_layers"]
    return {k: two.get(k, 0) - one.get(k, 0) for k in ("bytes", "dequant")}


# ----------------------------------------------------------------------------- inference


def build_inference_model(arch: ModelArch, load_in_4bit: bool, layers: int, attn: str = "sdpa"):
    """The fake full-width model as mixft's hf backend loads it (bf16, 4-bit with experts when asked)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mixtral_ft.plan.loadplan import inference_decisions
    from mixtral_ft.plan.model_build import build_meta_model, materialize_fake

    decisions = inference_decisions(load_in_4bit)
    model = build_meta_model(arch, decisions, {"num_hidden_layers": layers}, attn_implementation="eager")
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation_internal"):
            cfg._attn_implementation_internal = attn
    for p in model.parameters():
        p.requires_grad_(False)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    materialize_fake(model, decisions, fake)
    model.eval()
    return model, fake, torch


def simulate_prefill(model, fake, torch, vocab: int, batch: int, seq: int, attn: str) -> dict[str, Any]:
    """The prompt forward of ``generate``: left-padded batch with an attention mask, a fresh KV
    cache, logits for the last position only (transformers' ``logits_to_keep=1``), no grad."""
    import contextlib

    from mixtral_ft.plan.sim import MemoryTracker, data_free_ops, model_storage_keys, sdpa_memory_model

    with fake:
        ids = torch.zeros(batch, seq, dtype=torch.long)
        mask = torch.ones(batch, seq, dtype=torch.long)
    exclude = model_storage_keys(model) | {ids.untyped_storage()._cdata, mask.untyped_storage()._cdata}
    tracker = MemoryTracker(vocab, exclude)
    attn_ctx = sdpa_memory_model() if attn == "sdpa" else contextlib.nullcontext()
    with fake, attn_ctx, data_free_ops(), tracker, torch.no_grad():
        tracker.set_phase("prefill")
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        del out
        tracker.set_phase("after")
        del cache
    return {"peaks": tracker.peaks}


def measure_prefill(arch: ModelArch, load_in_4bit: bool, batch: int, seq: int, use_cache: bool = True) -> dict[str, Any]:
    """Prefill peak (per tag) at the two simulated depths for one batch shape, cached like training."""
    settings = {"load_in_4bit": load_in_4bit, "attn": "sdpa"}
    key = cache_key("prefill", arch, settings)
    data = (_read_cache(key) if use_cache else None) or {
        "method_version": METHOD_VERSION, "settings": settings, "versions": package_versions(),
        "arch": arch.fingerprint(), "sizes": {}}
    sk = size_key(batch, seq)
    measured = []
    if sk not in data["sizes"]:
        entry = {}
        with quiet():
            for layers in SIM_LAYERS:
                model, fake, torch = build_inference_model(arch, load_in_4bit, layers)
                entry[f"L{layers}"] = simulate_prefill(model, fake, torch, arch.vocab_size, batch, seq, "sdpa")
        data["sizes"][sk] = entry
        measured.append(sk)
        _write_cache(key, data)
    data["cache"] = {"key": key, "measured": measured}
    return data
