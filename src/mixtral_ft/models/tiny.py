"""A tiny random ``MixtralForCausalLM`` with a locally trained tokenizer, built with no network.

It has Mixtral's architecture (sparse MoE blocks, top-2 routing, grouped-query attention,
fused 3-D expert parameters on transformers v5) at a size that trains in seconds on a CPU,
so every Axolotl code path mixft uses can be exercised in CI. Same arguments, same bytes.
``build_tiny_dense`` does the same for the dense families mixft renders configs for (Llama,
Mistral, Qwen2, Qwen3 layouts), with the same tokenizer.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mixtral_ft.resources import data_dir
from mixtral_ft.util.atomic import staged_dir
from mixtral_ft.util.jsonl import read_jsonl

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")

# A Mistral-style chat template so chat-based callers work; RG/TC training uses raw prompts.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] }}\n\n{% endif %}{% endfor %}"
)

# Used when data/sample_qa.jsonl is absent: covers the prompt words of every mixft template.
BUILTIN_CORPUS = """\
Context: The Eiffel Tower is in Paris. It was completed in 1889 and is 330 metres tall.
Question: When was the Eiffel Tower completed?
Answer: The Eiffel Tower was completed in 1889.
Context: Water boils at 100 degrees Celsius at sea level. At higher altitude it boils at a lower temperature.
Question: At what temperature does water boil at sea level?
Answer: Water boils at 100 degrees Celsius at sea level.
Context: The refund policy allows returns within 30 days of purchase with a receipt.
Question: How long do customers have to return an item?
Answer: Customers can return an item within 30 days of purchase if they have a receipt.
You are a truth checker. Read the context, the question and the response. Decide whether the
response is relevant to the question and whether every claim is grounded in the context.
{"relevance": {"mistake": false, "explanation": "The response answers the question."},
 "groundedness": {"mistake": true, "mistakes": [{"text": "in 1890", "type": "contradiction",
 "explanation": "The context says 1889."}]}, "corrected_response": "It was completed in 1889."}
Response: The answer is not in the context. I do not know.
"""


@dataclass(frozen=True)
class TinyMixtralSpec:
    """Shape of the tiny model. Defaults train a few Axolotl steps in seconds on 2 CPU cores."""

    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    num_local_experts: int = 4
    num_experts_per_tok: int = 2
    max_position_embeddings: int = 8192
    seed: int = 0
    dtype: str = "float32"  # stored weight dtype; "bfloat16" for full-width benchmark models
    model_vocab_size: int | None = None  # embedding rows if larger than the tokenizer (Mixtral: 32000)


def full_width_spec(num_hidden_layers: int, seed: int = 0) -> TinyMixtralSpec:
    """Mixtral-8x7B's shapes (hidden 4096, 8 experts of 14336, 32/8 heads, 32k vocab), fewer layers.

    Random weights in bf16: about 1.41 B parameters per layer plus 0.26 B for the embeddings and
    head, so memory and step time can be measured per layer and extrapolated to the real 32 layers.
    The tokenizer is still trained on the bundled sample (it reaches a few thousand entries); the
    embedding matrix is padded to Mixtral's 32,000 rows so logits cost what they do for real.
    """
    return TinyMixtralSpec(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=32768,
        seed=seed,
        dtype="bfloat16",
        model_vocab_size=32000,
    )


def corpus_lines(sample_path: str | os.PathLike | None) -> list[str]:
    """Training text for the tokenizer: the bundled sample QA rows if present, plus the built-in corpus."""
    lines = BUILTIN_CORPUS.splitlines()
    if sample_path is not None and Path(sample_path).exists():
        for row in read_jsonl(sample_path):
            context = row.get("context", "")
            if isinstance(context, list):
                context = "\n".join(str(c) for c in context)
            lines += [str(context), str(row.get("question", "")), str(row.get("answer", ""))]
    return [line for line in lines if line]


def train_tokenizer(lines: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (never an unknown byte) that prepends ``<s>`` like Mixtral's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=8192,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def mixtral_config(spec: TinyMixtralSpec, tokenizer):
    """The ``MixtralConfig`` for ``spec``; special token ids and the minimum vocab come from ``tokenizer``."""
    from transformers import MixtralConfig

    return MixtralConfig(
        vocab_size=max(len(tokenizer), spec.model_vocab_size or 0),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        num_local_experts=spec.num_local_experts,
        num_experts_per_tok=spec.num_experts_per_tok,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype=spec.dtype,
    )


def build_tiny_mixtral(
    out: str | os.PathLike,
    spec: TinyMixtralSpec = TinyMixtralSpec(),
    sample_path: str | os.PathLike | None = None,
    force: bool = False,
    init_device: str | None = None,
) -> Path:
    """Write a tiny random Mixtral (safetensors) and its tokenizer to ``out`` as a HF model dir.

    ``init_device`` ("cuda") draws the random weights there: much faster for full-width models.
    Weights are identical for a given spec and device type, not across CPU and CUDA.
    """
    from transformers import MixtralForCausalLM

    tokenizer = train_tokenizer(corpus_lines(sample_path), spec.vocab_size)
    return _write_model(
        out,
        MixtralForCausalLM,
        mixtral_config(spec, tokenizer),
        tokenizer,
        spec,
        spec.seed,
        spec.dtype,
        sample_path,
        force,
        init_device,
    )


def _write_model(
    out, model_cls, config, tokenizer, spec, seed: int, dtype: str, sample_path, force: bool, init_device: str | None
) -> Path:
    """Random weights for ``config`` (seeded), saved with the tokenizer and ``mixft_tiny.json``, atomically."""
    import torch

    with staged_dir(out, force=force) as stage:
        torch.manual_seed(seed)
        with torch.device(init_device or "cpu"):
            model = model_cls._from_config(config, dtype=getattr(torch, dtype))
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        (stage / "mixft_tiny.json").write_text(
            json.dumps(
                {"spec": asdict(spec), "tokenizer_corpus": str(sample_path) if sample_path else None},
                indent=2,
                sort_keys=True,
            )
            + "\n",
            encoding="utf-8",
        )
    return Path(out)


# Dense decoder-only families mixft can render configs for (axolotl_cfg/families.py), as transformers model_types.
DENSE_ARCHS = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class TinyDenseSpec:
    """A tiny dense model of one of :data:`DENSE_ARCHS`: same widths as the tiny Mixtral, one MLP per layer."""

    arch: str = "llama"
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 8192
    seed: int = 0


def dense_config(spec: TinyDenseSpec, tokenizer):
    """The transformers config of ``spec.arch`` (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config)."""
    from transformers import CONFIG_MAPPING

    if spec.arch not in DENSE_ARCHS:
        raise ValueError(f"unknown dense architecture {spec.arch!r}; choose from {', '.join(DENSE_ARCHS)}")
    config_cls = CONFIG_MAPPING[spec.arch]
    kwargs = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    if "head_dim" in {f.name for f in fields(config_cls)}:
        kwargs["head_dim"] = spec.hidden_size // spec.num_attention_heads  # Qwen3's default is 128
    return config_cls(**kwargs)


def build_tiny_dense(
    out: str | os.PathLike,
    spec: TinyDenseSpec = TinyDenseSpec(),
    sample_path: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write a tiny random dense model (``spec.arch``) with the tiny Mixtral's tokenizer; deterministic, offline."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    tokenizer = train_tokenizer(corpus_lines(sample_path), spec.vocab_size)
    config = dense_config(spec, tokenizer)
    return _write_model(
        out,
        MODEL_FOR_CAUSAL_LM_MAPPING[type(config)],
        config,
        tokenizer,
        spec,
        spec.seed,
        "float32",
        sample_path,
        force,
        None,
    )


def default_corpus() -> Path | None:
    """The bundled ``data/sample_qa.jsonl`` (package data), when present."""
    path = data_dir() / "sample_qa.jsonl"
    return path if path.exists() else None
