"""Run the real forward and backward on tensors without data, and count the bytes they hold.

The model is made of ``FakeTensor``s on the CPU (shapes, dtypes and storages, no values), so a
full-width layer at 16K tokens costs milliseconds. :class:`MemoryTracker` counts the live bytes every op
allocates and frees, per phase; :class:`SavedTensors` records what autograd keeps for backward; stand-ins
allocate exactly what CUDA-only kernels (flash attention, grouped matmuls, int8 matmul, Cut Cross Entropy)
would. How each stand-in follows its kernel: docs/design/planner.md.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

TAGS = ("activations", "logits", "dequant", "grads")
_FORCED_TAG: list[str] = []  # the tag of every allocation inside ``tagged(...)`` (a stack)


@contextlib.contextmanager
def replaced(owner: Any, **values: Any) -> Iterator[None]:
    """Set attributes of ``owner`` (a module) for the block, and put the originals back after it (an
    attribute that was missing comes back as None, as transformers declares its lazy globals)."""
    saved = {name: getattr(owner, name, None) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


@contextlib.contextmanager
def tagged(tag: str) -> Iterator[None]:
    """Count the allocations made inside the block under ``tag`` (for memory models whose ops do not
    say what they are, e.g. the int8 weight a backward dequantizes with an ordinary copy)."""
    _FORCED_TAG.append(tag)
    try:
        yield
    finally:
        _FORCED_TAG.pop()


class MemoryTracker(TorchDispatchMode):
    """Live bytes of every storage created while active, by tag, with the peak per phase."""

    def __init__(self, vocab_size: int, exclude: set[int] | None = None, record: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        self.exclude = exclude or set()  # storage keys that exist already (parameters, inputs)
        # With ``record``: every allocation (key, bytes) and release (key, 0) in order, for the
        # caching-allocator replay (:mod:`mixtral_ft.plan.allocator`).
        self.events: list[tuple[int, int]] | None = [] if record else None
        self.live: dict[int, tuple[int, str]] = {}
        self.by_tag: dict[str, int] = defaultdict(int)
        self.current = 0
        self.phase = "start"
        self.peaks: dict[str, dict[str, Any]] = {}

    def _free(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry is not None:
            self.current -= entry[0]
            self.by_tag[entry[1]] -= entry[0]
            if self.events is not None:
                self.events.append((key, 0))

    def _tag(self, func, t: torch.Tensor) -> str:
        if _FORCED_TAG:
            return _FORCED_TAG[-1]
        name = str(func)
        if "dequantize" in name:
            return "dequant"
        if t.dim() and t.shape[-1] == self.vocab_size:
            return "logits"
        return "activations"

    def _track(self, func, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self.live or key in self.exclude:
            return
        n = storage.nbytes()
        tag = self._tag(func, t)
        self.live[key] = (n, tag)
        self.current += n
        self.by_tag[tag] += n
        if self.events is not None and n:
            self.events.append((key, n))
        weakref.finalize(storage, self._free, key)
        peak = self.peaks.get(self.phase)
        if peak is None or self.current > peak["bytes"]:
            self.peaks[self.phase] = {"bytes": self.current, "by_tag": dict(self.by_tag)}

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.peaks.setdefault(phase, {"bytes": self.current, "by_tag": dict(self.by_tag)})

    def retag(self, keys: set[int], tag: str) -> None:
        """Re-label live storages (e.g. the LoRA gradients, known only once they exist)."""
        for key in keys:
            if key in self.live:
                n, old = self.live[key]
                self.live[key] = (n, tag)
                self.by_tag[old] -= n
                self.by_tag[tag] += n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, lambda t: self._track(func, t), out)
        return out


@dataclass
class SavedTensors:
    """Storages autograd saved for backward while recording (parameters excluded)."""

    exclude: set[int]
    saved: dict[int, int] = field(default_factory=dict)

    def pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in self.exclude and key not in self.saved:
            self.saved[key] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self.saved.values())

    @contextlib.contextmanager
    def recording(self) -> Iterator[SavedTensors]:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            yield self


def storage_keys(tensors) -> set[int]:
    return {t.untyped_storage()._cdata for t in tensors}


def model_storage_keys(model) -> set[int]:
    keys = storage_keys(p for p in model.parameters())
    keys |= storage_keys(b for b in model.buffers())
    for module in model.modules():
        state = getattr(module, "state", None)  # bitsandbytes Linear8bitLt: the int8 matrix and its row scales
        for attr in ("CB", "SCB"):
            t = getattr(state, attr, None)
            if isinstance(t, torch.Tensor):
                keys.add(t.untyped_storage()._cdata)
        for plist in (getattr(module, "parametrizations", None) or {}).values():
            keys |= storage_keys(plist.parameters())
        for p in module.parameters(recurse=False):
            state = getattr(p, "quant_state", None)
            while state is not None:
                for attr in ("absmax", "code", "offset"):
                    t = getattr(state, attr, None)
                    if isinstance(t, torch.Tensor):
                        keys.add(t.untyped_storage()._cdata)
                state = getattr(state, "state2", None)
    return keys


# ----------------------------------------------------------------------------- flash attention


def _round_multiple(x: int, m: int) -> int:
    return (x + m - 1) // m * m


class FlashAttnMemoryModel(torch.autograd.Function):
    """flash-attn 2.8's varlen function, by its allocations: forward allocates ``out`` (like q) and
    the float32 ``softmax_lse`` (heads x total_q) and saves q, k, v, out, lse, the cu_seqlens and
    the rng state; backward allocates dq, dk, dv, ``softmax_d`` and ``dq_accum`` (float32) and,
    for grouped-query attention, dk/dv expanded to all query heads before summing them."""

    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[1], q.shape[0], dtype=torch.float32, device=q.device)
        rng = torch.empty(2, dtype=torch.int64, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, rng)
        ctx.batch = cu_q.shape[0] - 1
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, _out, _lse, _cu_q, _cu_k, _rng = ctx.saved_tensors
        dout = dout.contiguous()
        total_q, heads, head = q.shape
        total_k, heads_k = k.shape[0], k.shape[1]
        batch = ctx.batch
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        softmax_d = torch.empty(heads, total_q + 128 * batch, dtype=torch.float32, device=q.device)
        dq_accum = torch.empty(
            total_q + 128 * batch,
            heads,
            _round_multiple(head, 32) if head <= 192 else 256,
            dtype=torch.float32,
            device=q.device,
        )
        if heads_k != heads:
            dk_exp = torch.empty(total_k, heads, head, dtype=q.dtype, device=q.device)
            dv_exp = torch.empty(total_k, heads, v.shape[2], dtype=q.dtype, device=q.device)
            dk = dk_exp.reshape(total_k, heads_k, heads // heads_k, head).sum(2).to(q.dtype)
            dv = dv_exp.reshape(total_k, heads_k, heads // heads_k, v.shape[2]).sum(2).to(q.dtype)
            del dk_exp, dv_exp
        del softmax_d, dq_accum
        return dq, dk, dv, None, None, None, None


def _maybe_contiguous(x):
    return x.contiguous() if x is not None and x.stride(-1) != 1 else x


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
):
    """Signature of flash_attn.flash_attn_varlen_func (transformers introspects it)."""
    q, k, v = (_maybe_contiguous(x) for x in (q, k, v))
    return FlashAttnMemoryModel.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)


def flash_attn_func(
    q,
    k,
    v,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    b, s = q.shape[0], q.shape[1]
    cu = torch.zeros(b + 1, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(
        q.reshape(b * s, *q.shape[2:]),
        k.reshape(b * k.shape[1], *k.shape[2:]),
        v.reshape(b * v.shape[1], *v.shape[2:]),
        cu,
        cu,
        s,
        k.shape[1],
    )
    return out.view(b, s, *out.shape[1:])


@contextlib.contextmanager
def flash_attention_model(implementation: str = "flash_attention_2") -> Iterator[None]:
    """Make transformers' flash path call :class:`FlashAttnMemoryModel` for ``implementation``."""
    import transformers.modeling_flash_attention_utils as fa

    # transformers declares these module globals as None until its lazy import sets them: set them the same way
    with replaced(
        fa,
        _loaded_implementation=implementation,
        _flash_fn=flash_attn_func,
        _flash_varlen_fn=flash_attn_varlen_func,
        _flash_with_kvcache_fn=None,
        _pad_fn=fa._pad_input,
        _unpad_fn=fa._unpad_input,
        _process_flash_kwargs_fn=fa._lazy_define_process_function(flash_attn_varlen_func),
    ):
        yield


class GroupedMmFallbackMemoryModel(torch.autograd.Function):
    """transformers' ``grouped_mm_fallback`` (``integrations/moe.py``) by its allocations: the output,
    input and weight saved; backward allocates ``zeros_like`` for both gradients."""

    @staticmethod
    def forward(ctx, input, weight, offs):
        ctx.save_for_backward(input, weight)
        return torch.zeros(input.size(0), weight.size(2), dtype=input.dtype, device=input.device)

    @staticmethod
    def backward(ctx, grad):
        input, weight = ctx.saved_tensors
        return torch.zeros_like(input), torch.zeros_like(weight), None


@contextlib.contextmanager
def data_free_ops() -> Iterator[None]:
    """Ops whose eager kernels read values to size or check their output (``one_hot`` runs
    ``bincount``-style checks), replaced for the simulation by ones with the same allocations:
    ``one_hot(x, C)`` is an int64 tensor of ``x.shape + (C,)`` filled by a scatter, and
    ``bincount(x, minlength=m)`` (the router loss, values below m) an int64 scatter-add.
    ``torch.nn.functional.grouped_mm``'s fake kernel accepts bf16 only, and transformers' fallback
    for other dtypes reads the group offsets in backward, so float32/float16 experts go through
    :class:`GroupedMmFallbackMemoryModel`, the fallback's allocations without its loop."""
    try:
        from transformers.integrations import moe
    except ImportError:
        original_gmm = None
    else:
        original_gmm = getattr(moe, "_grouped_mm", None)
    grouped: contextlib.AbstractContextManager = contextlib.nullcontext()
    if original_gmm is not None:

        def grouped_mm(input, weight, offs):
            if weight.dtype == torch.bfloat16:
                return original_gmm(input, weight, offs)
            return GroupedMmFallbackMemoryModel.apply(input.to(weight.dtype), weight, offs)

        grouped = replaced(moe, _grouped_mm=grouped_mm)

    def bincount(x, weights=None, minlength=0):
        if not minlength:
            raise ValueError("the planner's bincount needs minlength")
        src = torch.ones_like(x) if weights is None else weights
        return torch.zeros(minlength, dtype=src.dtype, device=x.device).scatter_add_(0, x, src)

    def one_hot(x, num_classes=-1):
        if num_classes < 0:
            raise ValueError("the planner's one_hot needs num_classes")
        out = torch.zeros(*x.shape, num_classes, dtype=torch.int64, device=x.device)
        return out.scatter_(-1, x.unsqueeze(-1), 1)

    with grouped, replaced(F, one_hot=one_hot), replaced(torch, bincount=bincount):
        yield


class SdpaMemoryModel(torch.autograd.Function):
    """``scaled_dot_product_attention`` on a GPU, by its allocations: bf16/fp16 inputs without a
    mask go to the flash backend, with a mask to the memory-efficient one; both keep the output
    and a float32 log-sum-exp (B x heads x S) for backward, never the S x S scores. (The CPU
    kernels differ, so the real CPU op would misstate GPU memory.)"""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        lse = torch.empty(*q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mask = mask
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, _out, lse = ctx.saved_tensors
        delta = torch.empty_like(lse)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        del delta
        return dq, dk, dv, None


@contextlib.contextmanager
def sdpa_memory_model() -> Iterator[None]:
    """Route ``torch.nn.functional.scaled_dot_product_attention`` through :class:`SdpaMemoryModel`."""

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
            return SdpaMemoryModel.apply(query, key, value, attn_mask)
        return torch.empty(*query.shape[:-1], value.shape[-1], dtype=query.dtype, device=query.device)

    with replaced(F, scaled_dot_product_attention=sdpa):
        yield


# ----------------------------------------------------------------------------- LLM.int8 and Cut Cross Entropy


class Int8MatmulMemoryModel(torch.autograd.Function):
    """bitsandbytes' ``MatMul8bitLt`` (``load_in_8bit`` on CUDA, ``bitsandbytes/autograd/_functions.py``) by
    its allocations, for a frozen int8 weight (LoRA): the forward casts the input to float16, quantizes it
    (int8 copy, float32 row scales; with ``threshold`` > 0 the outlier test ``A.abs() >= threshold`` makes a
    float16 and a bool temporary, ``backends/cuda/ops.py``), multiplies into an int32 result and dequantizes
    it to the input dtype (``int8_scaled_mm``). It keeps the input for backward on ``ctx`` (not through
    ``save_for_backward``), so non-reentrant checkpointing cannot drop it. The backward dequantizes the
    whole weight to the input dtype (``state.CB.to(dtype_A, copy=True).mul_(...)``) and multiplies.
    Outlier columns depend on the data; none are assumed (each would add one input column and one
    weight column in 16 bits)."""

    @staticmethod
    def forward(ctx, A, B, bias, state):
        shape = A.shape
        a = A.reshape(-1, shape[-1])
        a16 = a.to(torch.float16)
        if state.threshold > 0.0:
            outliers = a16.abs() >= state.threshold
            del outliers
        ca = torch.empty(a16.shape, dtype=torch.int8, device=A.device)
        sca = torch.empty(a16.shape[0], dtype=torch.float32, device=A.device)
        del a16
        out_i32 = torch.empty(a.shape[0], state.CB.shape[0], dtype=torch.int32, device=A.device)
        out = torch.empty(a.shape[0], state.CB.shape[0], dtype=A.dtype, device=A.device)
        del out_i32, ca, sca
        ctx.tensors = (A,)  # as MatMul8bitLt keeps it: on ctx
        ctx.state = state
        ctx.shape = shape
        return out.reshape(*shape[:-1], state.CB.shape[0])

    @staticmethod
    def backward(ctx, grad_output):
        (A,) = ctx.tensors
        state = ctx.state
        g = grad_output.reshape(-1, grad_output.shape[-1]).contiguous()
        with tagged("dequant"):
            cb = state.CB.to(A.dtype, copy=True).mul_(state.SCB.unsqueeze(1).mul(1.0 / 127.0))
        grad_a = torch.matmul(g.to(A.dtype), cb).view(ctx.shape)
        del cb
        ctx.tensors = None
        return grad_a, None, None, None


@contextlib.contextmanager
def int8_matmul_model() -> Iterator[None]:
    """Route ``bitsandbytes.matmul`` (what ``Linear8bitLt.forward`` calls) through
    :class:`Int8MatmulMemoryModel`; on a CPU bitsandbytes would take its CPU path (``MatMul8bitFp``)."""
    import bitsandbytes as bnb

    def matmul(A, B, out=None, state=None, threshold=0.0, bias=None):
        if threshold > 0.0:
            state.threshold = threshold
        return Int8MatmulMemoryModel.apply(A, B, bias, state)

    with replaced(bnb, matmul=matmul):
        yield


class CutCrossEntropyMemoryModel(torch.autograd.Function):
    """Axolotl's Cut Cross Entropy (``cut_cross_entropy.cce.LinearCrossEntropyFunction``, Axolotl's fork
    ``axolotl-ai-cloud/ml-cross-entropy``) by its allocations: the forward computes the float32 log-sum-exp
    per token and, for the gradient filter, the float32 average logit per vocabulary entry, plus the float32
    target logit per token; it saves the hidden states, the head's weight, the log-sum-exp and the targets.
    The backward allocates the hidden states' gradient (``zeros_like(e)``), the vocabulary ordering
    (int32) and small int32 lock tables; the head's gradient only when the head trains. The logits
    (tokens x vocabulary) are never materialized: the kernels work tile by tile."""

    @staticmethod
    def forward(ctx, e, c, targets):
        lse = torch.empty(e.shape[0], dtype=torch.float32, device=e.device)
        logit_avg = torch.empty(c.shape[0], dtype=torch.float32, device=e.device)
        neg_dot = torch.empty(e.shape[0], dtype=torch.float32, device=e.device)
        loss = (neg_dot + lse).mean()
        del neg_dot
        ctx.save_for_backward(e, c, lse, targets, logit_avg)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        e, c, _lse, _targets, logit_avg = ctx.saved_tensors
        order = torch.empty(logit_avg.shape, dtype=torch.int32, device=e.device)
        de = torch.zeros_like(e)
        dc = torch.zeros_like(c) if ctx.needs_input_grad[1] else None
        del order
        return de, dc, None


def cut_cross_entropy(hidden, weight, labels):
    """The loss as Axolotl's CCE patch computes it: ``linear_cross_entropy(hidden, lm_head.weight, labels,
    shift=1)`` on the flattened hidden states (``cut_cross_entropy/transformers/*.py`` ``cce_forward``)."""
    e = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    return CutCrossEntropyMemoryModel.apply(e, weight, labels.reshape(-1))
