"""Session-scoped fixtures for tiny local models and real Axolotl runs (slow tier).

Each is built once per test run, on first use, in a pytest temporary directory; where the run is
spread over pytest-xdist workers, the workers share it (``built_once``: the first to ask builds it
under a file lock, the others wait for it and reuse it):

- ``tiny_mixtral_dir`` -> ``Path``: a Hugging Face model directory holding a tiny random
  ``MixtralForCausalLM`` (2 layers, 4 experts, top-2 routing, hidden size 64, float32
  safetensors) and its ``PreTrainedTokenizerFast`` (byte-level BPE trained locally on
  ``data/sample_qa.jsonl`` when present, else a built-in corpus; ``<s>``/``</s>``/``<pad>``/``<unk>``
  set; a Mistral-style chat template). Loads with ``AutoModelForCausalLM``/``AutoTokenizer``. ~10 s.
- ``rg_data_dir`` / ``tc_data_dir`` -> ``Path``: small prepared splits (``train.jsonl``,
  ``test.jsonl``, ``manifest.json``) in the formats of docs/formats.md §1 and §4.
- ``rg_lora_run`` -> ``Path``: the run directory of ``mixft train rg --profile cpu`` (LoRA, 4 steps)
  on ``rg_data_dir`` with ``tiny_mixtral_dir``. The adapter is ``RUN/output`` (adapter_config.json,
  adapter_model.safetensors); ``RUN/axolotl.yml``, ``RUN/manifest.json``, ``RUN/train.log`` and
  ``RUN/output/checkpoint-{2,4}/`` are there too. ~35 s on 2 cores.
- ``tc_lora_run`` -> ``Path``: the same for ``mixft train tc`` on ``tc_data_dir``. ~35 s.

Treat them as read-only: other tests share them.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

TC_PROMPT = (
    "You are a truth checker. Context: {context}\nQuestion: {question}\nResponse: {response}\n"
    "Reply with the verdict JSON.\n"
)

_FACTS = [
    ("The museum opens at 9 am and closes at 5 pm.", "When does the museum open?", "The museum opens at 9 am."),
    (
        "Refunds are possible within 30 days with a receipt.",
        "How long is the refund window?",
        "Refunds are possible within 30 days.",
    ),
    (
        "The library has 3 floors and a cafe on the ground floor.",
        "Where is the cafe?",
        "The cafe is on the ground floor.",
    ),
    (
        "The train to the airport leaves every 15 minutes from platform 2.",
        "How often does the airport train leave?",
        "It leaves every 15 minutes.",
    ),
]


def rg_rows(split: str, n: int) -> list[dict]:
    """``n`` rows of docs/formats.md §1 (deterministic)."""
    rows = []
    for i in range(n):
        context, question, answer = _FACTS[i % len(_FACTS)]
        rows.append(
            {
                "id": f"{split}-{i}",
                "source": "fixture",
                "group": f"g{i % len(_FACTS)}",
                "context": context,
                "question": question,
                "answer": answer,
            }
        )
    return rows


def tc_rows(split: str, n: int) -> list[dict]:
    """``n`` rows of docs/formats.md §4 with a short fixed prompt; every other response is hallucinated."""
    rows = []
    for i in range(n):
        context, question, answer = _FACTS[i % len(_FACTS)]
        bad = i % 2 == 1
        response = (
            answer.replace("9", "10").replace("30", "60").replace("ground", "top").replace("15", "40")
            if bad
            else answer
        )
        verdict = {
            "relevance": {"mistake": False, "explanation": "The response answers the question."},
            "groundedness": {
                "mistake": bad,
                "mistakes": [{"text": response, "type": "contradiction", "explanation": "The context says otherwise."}]
                if bad
                else [],
            },
            "corrected_response": answer if bad else None,
        }
        rows.append(
            {
                "id": f"{split}-{i}",
                "source": "fixture",
                "model": "fixture",
                "group": f"g{i % len(_FACTS)}",
                "context": context,
                "question": question,
                "response": response,
                "verdict": verdict,
                "hallucinated": bad,
                "prompt": TC_PROMPT.format(context=context, question=question, response=response),
                "completion": json.dumps(verdict, sort_keys=True),
            }
        )
    return rows


def write_split(out: Path, train: list[dict], test: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    (out / "manifest.json").write_text(json.dumps({"kind": "fixture", "train": len(train), "test": len(test)}) + "\n")
    return out


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``DIR/name``, made by ``build(DIR/name)`` once per test run. Under pytest-xdist, DIR is the
    run's directory that every worker's temporary directory sits in, so the workers share one build:
    the first to ask builds it while holding a file lock, the others wait for the lock and reuse it.
    A build that failed (no ``.done`` marker) is removed and made again by the next to ask."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    shared = root / "shared"
    shared.mkdir(exist_ok=True)
    target, done = shared / name, shared / f"{name}.done"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            done.touch()
    return target


@pytest.fixture(scope="session")
def tiny_mixtral_dir(tmp_path_factory) -> Path:
    from mixtral_ft.models.tiny import build_tiny_mixtral

    repo = Path(__file__).resolve().parents[2]
    sample = repo / "data" / "sample_qa.jsonl"
    return built_once(
        tmp_path_factory,
        "tiny-mixtral",
        lambda out: build_tiny_mixtral(out, sample_path=sample if sample.exists() else None),
    )


@pytest.fixture(scope="session")
def rg_data_dir(tmp_path_factory) -> Path:
    return built_once(
        tmp_path_factory, "rg-data", lambda out: write_split(out, rg_rows("train", 12), rg_rows("test", 4))
    )


@pytest.fixture(scope="session")
def tc_data_dir(tmp_path_factory) -> Path:
    return built_once(
        tmp_path_factory, "tc-data", lambda out: write_split(out, tc_rows("train", 12), tc_rows("test", 4))
    )


def run_mixft(args: list[str]) -> int:
    from mixtral_ft.cli.main import main

    return main(args)


def _train(task: str, data: Path, model: Path, run_dir: Path) -> Path:
    rc = run_mixft(
        ["train", task, "--data", str(data), "--profile", "cpu", "--base-model", str(model), "--run-dir", str(run_dir)]
    )
    if rc != 0:
        log = run_dir / "train.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        pytest.fail(f"mixft train {task} exited {rc}; log tail:\n{tail}")
    return run_dir


@pytest.fixture(scope="session")
def rg_lora_run(tmp_path_factory, tiny_mixtral_dir, rg_data_dir) -> Path:
    return built_once(tmp_path_factory, "rg-lora", lambda run: _train("rg", rg_data_dir, tiny_mixtral_dir, run))


@pytest.fixture(scope="session")
def tc_lora_run(tmp_path_factory, tiny_mixtral_dir, tc_data_dir) -> Path:
    return built_once(tmp_path_factory, "tc-lora", lambda run: _train("tc", tc_data_dir, tiny_mixtral_dir, run))
