"""Shared test set-up: offline, no telemetry, no progress bars; paths to repo data and ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MIXFT_PROGRESS"] = "0"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MIXFT_SHARED_DIR", REPO_ROOT.parent / "shared"))
RAGTRUTH = SHARED_DIR / "datasets" / "ragtruth-qa" / "ragtruth_qa.jsonl"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def ragtruth_path() -> Path:
    """The real RAGTruth QA annotations from ../shared (skipped where ../shared is absent)."""
    if not RAGTRUTH.exists():
        pytest.skip(f"{RAGTRUTH} not found: ../shared (the RAGTruth QA annotations) is not beside this checkout")
    return RAGTRUTH


# Session fixtures that build and train tiny models (slow tier) live in their own module.
from fixtures_models import *  # noqa: E402,F401,F403
