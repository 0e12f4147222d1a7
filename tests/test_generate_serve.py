"""`mixft generate --backend openai` against a real `transformers serve` on loopback (slow tier)."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.cli.main import main

pytestmark = pytest.mark.slow

ROWS = [
    {
        "id": "q1",
        "source": "s",
        "group": "g1",
        "context": "The Eiffel Tower is in Paris.",
        "question": "Where is the Eiffel Tower?",
        "answer": "In Paris.",
    },
    {
        "id": "q2",
        "source": "s",
        "group": "g2",
        "context": "Water boils at 100 degrees Celsius at sea level.",
        "question": "At what temperature does water boil?",
        "answer": "At 100 degrees Celsius.",
    },
]


def _data(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _rows(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_generate_openai_matches_hf_and_resumes(openai_server, fault_proxy, smollm2_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generate-secret-42")
    data = _data(tmp_path)
    out = tmp_path / "gen.jsonl"
    args = [
        "generate",
        "--data",
        str(data),
        "--out",
        str(out),
        "-m",
        openai_server.model,
        "--backend",
        "openai",
        "--base-url",
        fault_proxy.base_url,
        "--max-new-tokens",
        "8",
        "--concurrency",
        "2",
    ]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "wrote 2 row(s)" in stdout and "tokens/s" in stdout
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == ["q1", "q2"]
    for r in rows:
        assert r["error"] is None and isinstance(r["response"], str) and 1 <= r["n_new_tokens"] <= 8
        assert r["model"] == {"name": openai_server.model, "adapter": None, "backend": "openai", "prompt": "rg"}
        assert r["generation"]["max_new_tokens"] == 8 and r["finish_reason"] in ("stop", "length")
    manifest = (tmp_path / "gen.jsonl.manifest.json").read_text()
    assert "sk-generate-secret" not in manifest + out.read_text()
    assert json.loads(manifest)["inputs"][0]["rows"] == 2

    # A re-run sends nothing and changes nothing.
    before, sent = out.read_bytes(), fault_proxy.requests
    assert main(args) == 0
    assert out.read_bytes() == before and fault_proxy.requests == sent
    assert "resumed: 2 of 2" in capsys.readouterr().err

    # The in-process backend, same model, same prompts, greedy: the same text.
    hf_out = tmp_path / "gen_hf.jsonl"
    assert (
        main(
            [
                "generate",
                "--data",
                str(data),
                "--out",
                str(hf_out),
                "-m",
                str(smollm2_dir),
                "--max-new-tokens",
                "8",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    by_id = {r["id"]: r for r in _rows(hf_out)}
    for r in rows:
        assert by_id[r["id"]]["response"] == r["response"]
        assert by_id[r["id"]]["n_prompt_tokens"] == r["n_prompt_tokens"]


def test_generate_slow_responses_time_out_and_are_retried(openai_server, fault_proxy, tmp_path):
    fault_proxy.delay_first, fault_proxy.delay_s = 1, 20.0
    out = tmp_path / "gen.jsonl"
    assert (
        main(
            [
                "generate",
                "--data",
                str(_data(tmp_path)),
                "--out",
                str(out),
                "-m",
                openai_server.model,
                "--backend",
                "openai",
                "--base-url",
                fault_proxy.base_url,
                "--max-new-tokens",
                "4",
                "--concurrency",
                "1",
                "--timeout",
                "10",
                "--max-retries",
                "2",
            ]
        )
        == 0
    )
    rows = _rows(out)
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    assert fault_proxy.requests == 3
    assert max(r["latency_s"] for r in rows) >= 10


def test_generate_chat_mode(openai_server, tmp_path):
    out = tmp_path / "gen.jsonl"
    assert (
        main(
            [
                "generate",
                "--data",
                str(_data(tmp_path)),
                "--out",
                str(out),
                "-m",
                openai_server.model,
                "--backend",
                "openai",
                "--base-url",
                openai_server.ensure_up().base_url,
                "--endpoint-mode",
                "chat",
                "--prompt",
                "chat",
                "--max-new-tokens",
                "6",
                "--limit",
                "1",
            ]
        )
        == 0
    )
    (row,) = _rows(out)
    assert row["model"]["prompt"] == "chat" and row["answer_prefix"] is None and row["response"]
