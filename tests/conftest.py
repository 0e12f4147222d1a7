"""Shared test set-up: the test environment (``support/offline_env.py``), the fixture modules of
``support/`` (``pytest_plugins``), and paths to the repository and to the data outside it
(``MIXFT_SHARED_DIR``, default ``../shared``; data/README.md, "Data outside the repository")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.offline_env import OFFLINE_ENV

for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)
os.environ["MIXFT_PROGRESS"] = "0"

# Fixtures shared across test modules: tiny models and real Axolotl runs (slow tier), a real
# OpenAI-compatible server on loopback, the planner's checked-in measurements.
pytest_plugins = ["support.fixtures_models", "support.fixtures_serve", "support.fixtures_plan"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("MIXFT_SHARED_DIR", REPO_ROOT.parent / "shared"))
RAGTRUTH = SHARED_DIR / "datasets" / "ragtruth-qa" / "ragtruth_qa.jsonl"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def ragtruth_path() -> Path:
    """The real RAGTruth QA annotations under MIXFT_SHARED_DIR (skipped where they are absent)."""
    if not RAGTRUTH.exists():
        pytest.skip(
            f"{RAGTRUTH} not found: set MIXFT_SHARED_DIR to the folder that holds the RAGTruth QA annotations (data/README.md)"
        )
    return RAGTRUTH
