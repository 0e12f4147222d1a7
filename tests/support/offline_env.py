"""The environment of every test and of every process a test starts: offline (nothing from the
Hugging Face Hub), no telemetry, W&B off, no tokenizer thread warnings.

``tests/conftest.py`` applies it to the test session (before anything imports transformers), so a
bare ``pytest`` and ``make test`` run the same way; helpers that start ``mixft`` or a server add it
to the child's environment. ``mixft demo`` sets its own (``mixtral_ft.demo.env_for_cpu_demo``).
"""

from __future__ import annotations

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}
