"""Measurements the planner cannot compute by formula, taken on the CPU in seconds, and cached.

For a training setup the real model class is built at full width with 2 and 3 decoder layers
(:mod:`model_build`) and one training step is run at the planned micro batch and sequence length under
:mod:`sim`'s instruments; depth is extrapolated linearly. The cache is ``$MIXFT_CACHE/plan`` (default
``~/.cache/mixft/plan``), keyed by the model config, the settings that change the step, the package
versions and :data:`METHOD_VERSION`. The method: docs/design/planner.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

from mixtral_ft.errors import UsageError
from mixtral_ft.plan.allocator import needed_bytes
from mixtral_ft.plan.arch import ModelArch
from mixtral_ft.plan.model_build import build_meta_model, materialize, materialize_fake
from mixtral_ft.plan.storage import inference_decisions, training_decisions
from mixtral_ft.util.atomic import atomic_write_text

METHOD_VERSION = 4
SIM_LAYERS = (2, 3)  # depths simulated; further layers add what the third added
LA, LB = (f"L{n}" for n in SIM_LAYERS)
# Phases of a step whose peaks are extrapolated in depth. A decoder layer's peak is linear in its
# index, so over the layers it is largest at the first or the last one: the forward of layer 0 and
# of the last layer, the backward of the last layer (processed first) and of layer 0 (last).
PHASES = ("forward_layer0", "forward", "head", "layers_backward", "layer0_backward")
FORWARD_PHASES = ("start", "forward_layer0", "forward", "forward_mid")
TRANSIENT_TAGS = ("activations", "logits", "dequant")
_VERSIONED = ("torch", "transformers", "peft", "bitsandbytes")


def cache_dir() -> Path:
    return Path(os.environ.get("MIXFT_CACHE", Path.home() / ".cache" / "mixft")) / "plan"


def package_versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def cache_key(kind: str, arch: ModelArch, settings: dict[str, Any]) -> str:
    body = {
        "kind": kind,
        "method": METHOD_VERSION,
        "arch": arch.fingerprint(),
        "settings": settings,
        "versions": package_versions(),
        "layers": SIM_LAYERS,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _read_cache(key: str) -> dict[str, Any] | None:
    path = cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _cached(kind: str, arch: ModelArch, settings: dict[str, Any], use_cache: bool) -> tuple[str, dict[str, Any]]:
    """(cache key, the measurements cached under it, or an empty record to fill) for ``kind`` and ``settings``."""
    key = cache_key(kind, arch, settings)
    data = (_read_cache(key) if use_cache else None) or {
        "method_version": METHOD_VERSION,
        "settings": settings,
        "versions": package_versions(),
        "arch": arch.fingerprint(),
        "sizes": {},
    }
    return key, data


def _write_cache(key: str, data: dict[str, Any]) -> None:
    try:
        atomic_write_text(cache_dir() / f"{key}.json", json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only cache only costs the next plan the measurement again


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the libraries' warnings while measuring (import chatter, the flash-attn dtype cast,
    use_cache vs checkpointing): the plan states its own assumptions."""
    names = ("torch", "torchao", "bitsandbytes", "transformers", "peft", "accelerate")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    hf_level: int | None = None  # None: no transformers, nothing to restore
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        pass
    else:
        hf_level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)
        if hf_level is not None:
            hf_logging.set_verbosity(hf_level)


def training_settings(setup) -> dict[str, Any]:
    """The settings of a :class:`TrainSetup` that change what one step holds (not its sizes)."""
    keep = (
        "adapter",
        "load_in_4bit",
        "load_in_8bit",
        "quantize_moe_experts",
        "lora",
        "compute_dtype",
        "mixed_precision",
        "embeddings_skip_upcast",
        "gradient_checkpointing",
        "use_reentrant",
        "attn_implementation",
        "experts_implementation",
        "model_config_overrides",
        "cut_cross_entropy",
    )
    d = setup.as_dict()
    out = {k: d[k] for k in keep}
    if d["casts"] != "axolotl":  # another stack's casts (left out for Axolotl's, so earlier keys stay valid)
        out["casts"] = d["casts"]
    if d["sample_packing"] and setup.attention_kind != "flash":  # packed rows' 4-D mask (left out likewise)
        out["sample_packing"] = True
    return out


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


def _axolotl_peft_patch() -> None:
    """What Axolotl does to PEFT before it targets quantized expert parameters with LoRA
    (``loaders/patch_manager.py`` ``_apply_moe_expert_quantization_patch`` calls
    ``monkeypatch/moe_quant.py`` ``patch_peft_target_parameters_matching``): among others, PEFT 0.21 leaves its
    ``_LoraFactorsProxy`` on a parameter that bitsandbytes already parametrizes, so without the patch a second
    step fails. Applied the same way here (a process-wide patch of PEFT, as in Axolotl's process)."""
    try:
        from axolotl.monkeypatch.moe_quant import patch_peft_target_parameters_matching
    except ImportError:  # no Axolotl here: PEFT as it is
        return
    patch_peft_target_parameters_matching()


def build_training_model(arch: ModelArch, setup, layers: int, fake: bool = True):
    """The full-width model of ``setup`` with ``layers`` decoder layers, ready to train: FakeTensors,
    or with ``fake=False`` real tensors (for the tests that check the simulation against a real step)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    decisions = training_decisions(setup, arch.model_type)
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

        if setup.quantize_moe_experts or setup.lora.target_parameters:
            _axolotl_peft_patch()
        config = LoraConfig(
            r=setup.lora.r,
            lora_alpha=setup.lora.alpha,
            lora_dropout=setup.lora.dropout,
            target_modules=_lora_targets(model, setup.lora),
            target_parameters=list(setup.lora.target_parameters) or None,
            modules_to_save=list(setup.lora.modules_to_save) or None,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    materialize(model, decisions, mode)
    lora_params = [p for p in model.parameters() if p.requires_grad]
    context = mode if mode is not None else contextlib.nullcontext()
    model.train()
    return model, context, lora_params, torch


def _inputs(torch, batch: int, seq: int, flash: bool, packed: bool = False) -> tuple[dict[str, Any], set]:
    ids = torch.zeros(batch, seq, dtype=torch.long)
    if flash:
        # Sample packing with flash attention: one row of all tokens, sequences told apart by
        # cu_seqlens (Axolotl's multipack collator + transformers' varlen path).
        ids = ids.reshape(1, batch * seq)
        kwargs = {
            "input_ids": ids,
            "labels": ids.clone(),
            "position_ids": torch.zeros_like(ids),
            "cu_seq_lens_q": torch.zeros(batch + 1, dtype=torch.int32),
            "cu_seq_lens_k": torch.zeros(batch + 1, dtype=torch.int32),
            "max_length_q": seq,
            "max_length_k": seq,
        }
    elif packed:
        # Sample packing without flash attention: position ids that restart per sequence, from which
        # transformers builds a block-diagonal 4-D mask (masking_utils.py:714-743, 845).
        kwargs = {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.zeros_like(ids)}
    else:
        # Full rows, as the collator gives them: no position_ids (the model counts 0..S-1), no padding
        # (an all-ones attention_mask cannot be seen to be all ones on FakeTensors, and sdpa would get a
        # 4-D mask it does not get on the GPU, masking_utils.py:231-281); see unpacked_rows().
        kwargs = {"input_ids": ids, "labels": ids.clone()}
    from mixtral_ft.plan.sim import storage_keys

    return kwargs, storage_keys(v for v in kwargs.values() if hasattr(v, "untyped_storage"))


@contextlib.contextmanager
def unpacked_rows() -> Iterator[None]:
    """Rows that are not packed, told to transformers as its data would tell it: on real position ids 0..S-1
    ``find_packed_sequence_indices`` returns None (``masking_utils.py:739-741``), but on FakeTensors it
    cannot read them and reports packed sequences, which would build a 4-D mask the GPU run never builds."""
    from transformers import masking_utils

    from mixtral_ft.plan.sim import replaced

    with replaced(masking_utils, find_packed_sequence_indices=lambda position_ids: None):
        yield


def decoder_layers(model) -> list:
    """The model's decoder layers (the ModuleList named ``layers``/``h``)."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h") and len(module):
            return list(module)
    return []


def _layer_phase_hooks(model, tracker, backward: bool = True) -> list:
    """Phase marks per decoder layer: its forward (layer 0, the last, the others), and the end of
    its backward (a hook on the gradient of its input), which starts the next layer's backward."""
    layers = decoder_layers(model)
    last = len(layers) - 1
    handles = []

    def name_forward(j: int) -> str:
        return "forward_layer0" if j == 0 else "forward" if j == last else "forward_mid"

    def name_backward(j: int) -> str:
        return "layer0_backward" if j == 0 else "layers_backward" if j == last else "layers_backward_mid"

    for j, layer in enumerate(layers):

        def pre(module, args, kwargs=None, j=j):
            if tracker.phase in FORWARD_PHASES:
                tracker.set_phase(name_forward(j))
            x = args[0] if args else (kwargs or {}).get("hidden_states")
            if backward and x is not None and x.requires_grad and j > 0:
                x.register_hook(lambda g, j=j: tracker.set_phase(name_backward(j - 1)))

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    return handles


FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f")


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder(model):
    """The decoder stack under the causal-LM head (``model.model``, ``transformer`` for GPT-2/Bloom ...)."""
    base = _base(model)
    inner = getattr(base, getattr(base, "base_model_prefix", "") or "model", None)
    if inner is None:
        inner = getattr(base, "model", None)
    return base if inner is None else inner


def _head_start(model):
    """The module whose forward starts the head phase: the final norm (``model.norm``; ``transformer.ln_f``
    for GPT-2/Bloom/Falcon; ``final_layernorm``/``final_layer_norm``/``norm_f`` elsewhere), else the
    output embeddings (then the final norm's forward is counted in the last layer's phase)."""
    inner = _decoder(model)
    for name in FINAL_NORM_NAMES:
        module = getattr(inner, name, None)
        if module is not None:
            return module
    return _base(model).get_output_embeddings()


def simulate_training_step(
    model, fake, lora_params, torch, setup, vocab: int, batch: int, seq: int, record: bool = False
) -> dict[str, Any]:
    """One training step on the fake model: peak bytes per phase and tag, and saved-tensor bytes; with
    ``record``, also the step's allocations and releases in order (``events``)."""

    from mixtral_ft.plan.sim import MemoryTracker, SavedTensors, data_free_ops, model_storage_keys

    flash = setup.attention_kind == "flash"
    packed = setup.sample_packing and not flash
    with fake:
        inputs, input_keys = _inputs(torch, batch, seq, flash, packed)
    exclude = model_storage_keys(model) | input_keys
    tracker = MemoryTracker(vocab, exclude, record=record)
    saved = SavedTensors(exclude)
    layer_saved: dict[str, int] = {}
    norm = _head_start(model)
    if norm is None:
        raise UsageError(
            f"{type(_base(model)).__name__}: the planner finds neither a final norm nor an output head "
            "to mark the head phase of the step; this model class is not planned"
        )
    handles = []

    def at_head(module, args):
        layer_saved["bytes"] = saved.bytes
        layer_saved["dequant"] = sum(n for k, n in saved.saved.items() if tracker.live.get(k, (0, ""))[1] == "dequant")
        tracker.set_phase("head")
        x = args[0]
        if x.requires_grad:
            x.register_hook(lambda g: tracker.set_phase("layers_backward"))

    handles.append(norm.register_forward_pre_hook(at_head))
    handles += _layer_phase_hooks(model, tracker)
    for p in lora_params:
        handles.append(
            p.register_post_accumulate_grad_hook(lambda p: tracker.retag({p.grad.untyped_storage()._cdata}, "grads"))
        )
    autocast = (
        torch.autocast("cpu", dtype=getattr(torch, setup.compute_dtype))
        if setup.mixed_precision and setup.compute_dtype != "float32"
        else contextlib.nullcontext()
    )
    try:
        with fake, _stand_ins(setup, packed), data_free_ops(), tracker, saved.recording():
            tracker.set_phase("forward_layer0")
            with autocast:
                if setup.cut_cross_entropy:
                    loss = _cce_loss(model, inputs)
                else:
                    loss = model(**inputs).loss  # the Trainer keeps only the loss: logits are freed before backward
            loss.backward()
            del loss
    finally:
        for h in handles:
            h.remove()
        for p in lora_params:
            p.grad = None
    out = {"peaks": tracker.peaks, "saved_layers": layer_saved, "tokens": batch * seq, "batch": batch, "seq": seq}
    if record:
        out["events"] = tracker.events
    return out


@contextlib.contextmanager
def _stand_ins(setup, packed: bool) -> Iterator[None]:
    """What the simulated step runs in place of GPU code (:mod:`sim`: flash attention's or SDPA's memory model,
    LLM.int8's), and how unpacked rows are told to transformers (:func:`unpacked_rows`)."""
    from mixtral_ft.plan.sim import flash_attention_model, int8_matmul_model, sdpa_memory_model

    flash = setup.attention_kind == "flash"
    with contextlib.ExitStack() as stack:
        if flash:
            stack.enter_context(flash_attention_model())
        elif setup.attention_kind == "sdpa":
            stack.enter_context(sdpa_memory_model())
        if setup.load_in_8bit and not setup.load_in_4bit:
            stack.enter_context(int8_matmul_model())
        if not flash and not packed:
            stack.enter_context(unpacked_rows())
        yield


def _cce_loss(model, inputs: dict[str, Any]):
    """The loss of Axolotl's Cut Cross Entropy patch (``cce_forward``): the decoder's last hidden states and
    the head's weight go to CCE, with the router's auxiliary loss added as the model's forward adds it; the
    head runs on the last position only (``logits_to_keep=1``: a few hundred KiB where the patched forward
    computes none), so the logits are never materialized."""
    from mixtral_ft.plan.sim import cut_cross_entropy

    captured: dict[str, Any] = {}

    def grab(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    handle = _decoder(model).register_forward_hook(grab)
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    try:
        out = model(**kwargs, logits_to_keep=1)
    finally:
        handle.remove()
    base = _base(model)
    loss = cut_cross_entropy(captured.pop("hidden"), base.get_output_embeddings().weight, inputs["labels"])
    aux = getattr(out, "aux_loss", None)
    if aux is not None:
        loss = loss + getattr(base, "router_aux_loss_coef", 0.0) * aux
    del out
    return loss


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


class Simulator(Protocol):
    """What :func:`measure_training` steps: a :class:`TrainingSimulator`, or a stand-in that builds one on first use."""

    def lora_parameters(self) -> dict[str, Any]: ...

    def run(self, batch: int, seq: int) -> dict[str, Any]: ...


class TrainingSimulator:
    """Fake models of one setup at the two simulated depths and at full depth, built once, stepped at any
    size. The full-depth step is recorded and replayed through the CUDA caching allocator
    (:mod:`mixtral_ft.plan.allocator`): rounding and fragmentation depend on the order of every allocation
    of every layer, so they are not extrapolated."""

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
        out["allocator"] = self.allocator(batch, seq)
        return out

    def allocator(self, batch: int, seq: int) -> dict[str, Any]:
        """The full-depth step's live-byte peak and what the caching allocator needs for it
        (:func:`mixtral_ft.plan.allocator.needed_bytes`)."""
        layers = self.arch.num_layers
        model, fake, lora_params, torch = self._model(layers)
        r = simulate_training_step(
            model, fake, lora_params, torch, self.setup, self.arch.vocab_size, batch, seq, record=True
        )
        tracked = max(p["bytes"] for p in r["peaks"].values())
        return {"layers": layers, "tracked_peak": tracked, "allocations": len(r["events"]) // 2} | needed_bytes(
            r["events"]
        )


def measure_training(
    arch: ModelArch,
    setup,
    sizes: list[tuple[int, int]],
    use_cache: bool = True,
    simulator: Simulator | None = None,
) -> dict[str, Any]:
    """Per-phase peaks at the two simulated depths for each (micro batch, sequence length) in ``sizes``, from
    the cache when measured before. Also the trainable (LoRA) parameter count and dtype."""
    settings = training_settings(setup)
    key, data = _cached("train", arch, settings, use_cache)
    # An entry measured before the allocator replay existed is measured again.
    missing = [s for s in sizes if "allocator" not in data["sizes"].get(size_key(*s), {})]
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


def depth_split(
    first: dict[str, float], second: dict[str, float], layers: int, tags: tuple[str, ...] = TRANSIENT_TAGS + ("grads",)
) -> dict[str, float]:
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
    return {
        phase: depth_split(
            (one.get(phase) or {}).get("by_tag") or {}, (two.get(phase) or {}).get("by_tag") or {}, layers
        )
        for phase in PHASES
    }


def saved_per_layer(entry: dict[str, Any]) -> dict[str, float]:
    """Bytes autograd keeps per decoder layer until backward (what the third layer added)."""
    one, two = entry[LA]["saved_layers"], entry[LB]["saved_layers"]
    return {k: two.get(k, 0) - one.get(k, 0) for k in ("bytes", "dequant")}


# ----------------------------------------------------------------------------- inference


def build_inference_model(arch: ModelArch, load_in_4bit: bool, layers: int, attn: str = "sdpa"):
    """The fake full-width model as mixft's hf backend loads it (bf16, 4-bit with experts when asked)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

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
    from mixtral_ft.plan.sim import MemoryTracker, data_free_ops, model_storage_keys, sdpa_memory_model

    with fake:
        ids = torch.zeros(batch, seq, dtype=torch.long)
        mask = torch.ones(batch, seq, dtype=torch.long)
    exclude = model_storage_keys(model) | {ids.untyped_storage()._cdata, mask.untyped_storage()._cdata}
    tracker = MemoryTracker(vocab, exclude)
    attn_ctx = sdpa_memory_model() if attn == "sdpa" else contextlib.nullcontext()
    handles = _layer_phase_hooks(model, tracker, backward=False)
    with fake, attn_ctx, data_free_ops(), tracker, torch.no_grad():
        tracker.set_phase("forward_layer0")
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        del out
        tracker.set_phase("after")
        del cache
    for h in handles:
        h.remove()
    return {"peaks": tracker.peaks}


def measure_prefill(
    arch: ModelArch, load_in_4bit: bool, batch: int, seq: int, use_cache: bool = True
) -> dict[str, Any]:
    """Prefill peak (per tag) at the two simulated depths for one batch shape, cached like training."""
    settings = {"load_in_4bit": load_in_4bit, "attn": "sdpa"}
    key, data = _cached("prefill", arch, settings, use_cache)
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
