"""`mixft judge --backend openai` against a real `transformers serve` on loopback (slow tier):
the happy path, the server killed mid-run and restarted, HTTP 500s, and the client killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mixtral_ft.cli.main import main

pytestmark = pytest.mark.slow

CONTEXTS = [
    "The museum opens at 9 am.",
    "Refunds are possible within 30 days.",
    "The cafe is on the ground floor.",
    "Trains leave every 15 minutes.",
    "The shop closes at 6 pm.",
    "Parking is free after 8 pm.",
]


def _responses(tmp_path, n):
    path = tmp_path / "responses.jsonl"
    rows = [
        {
            "id": f"r{i}",
            "source": "test",
            "model": "gen",
            "context": CONTEXTS[i % 6],
            "question": "When?",
            "response": "It opens at 10 am." if i % 2 else "As the context says.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _args(responses, out, base_url, model, *extra):
    return [
        "judge",
        "--responses",
        str(responses),
        "--out",
        str(out),
        "-m",
        model,
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--max-new-tokens",
        "6",
        *extra,
    ]


def _wait_for_lines(path, n, timeout=180):
    deadline = time.monotonic() + timeout
    while len(_lines(path)) < n:
        assert time.monotonic() < deadline, f"{path} never reached {n} lines"
        time.sleep(0.1)


def test_judge_openai_rows_and_summary(openai_server, tmp_path, capsys):
    out = tmp_path / "j.jsonl"
    assert (
        main(
            _args(
                _responses(tmp_path, 3),
                out,
                openai_server.ensure_up().base_url,
                openai_server.model,
                "--concurrency",
                "3",
            )
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "judged 3 of 3" in stdout and "parse failures" in stdout and "hallucinated" in stdout
    rows = [json.loads(l) for l in _lines(out)]
    assert sorted(r["id"] for r in rows) == ["r0", "r1", "r2"]
    for r in rows:
        assert set(r) >= {
            "id",
            "source",
            "model",
            "group",
            "verdict",
            "parse_ok",
            "parse_error",
            "raw",
            "hallucinated",
            "score",
            "latency_s",
            "judge",
        }
        assert r["judge"]["backend"] == "openai" and len(r["judge"]["prompt_sha256"]) == 64
        assert isinstance(r["raw"], str) and r["error"] is None and r["score"] is None
        assert r["parse_ok"] == (r["verdict"] is not None) and (r["hallucinated"] is None) == (not r["parse_ok"])
    summary = json.loads((tmp_path / "j.jsonl.manifest.json").read_text())["summary"]
    assert summary["judged"] == 3 and summary["parse_failure_share"] is not None


def test_server_killed_mid_run_then_restarted(openai_server, tmp_path):
    responses = _responses(tmp_path, 6)
    out = tmp_path / "j.jsonl"
    args = _args(
        responses,
        out,
        openai_server.ensure_up().base_url,
        openai_server.model,
        "--concurrency",
        "1",
        "--max-retries",
        "1",
        "--timeout",
        "20",
    )
    first: dict = {}
    t = threading.Thread(target=lambda: first.setdefault("rc", main(args)))
    t.start()
    try:
        _wait_for_lines(out, 2)
        openai_server.kill()
    finally:
        t.join(240)
    assert first["rc"] == 1
    rows1 = [json.loads(l) for l in _lines(out)]
    ok1 = [l for l, r in zip(_lines(out), rows1) if r["error"] is None]
    assert len(rows1) == 6 and len(ok1) >= 2 and any(r["error"] for r in rows1)

    openai_server.start()
    assert main(args) == 0
    lines2 = _lines(out)
    ids = [json.loads(l)["id"] for l in lines2]
    assert sorted(ids) == [f"r{i}" for i in range(6)]  # no loss, no duplicates
    assert lines2[: len(ok1)] == ok1  # what was judged before the kill is kept as it was
    assert all(json.loads(l)["error"] is None for l in lines2)


def test_http_500_bounded_retries_then_recovery(openai_server, fault_proxy, tmp_path):
    responses = _responses(tmp_path, 2)
    out = tmp_path / "j.jsonl"
    fault_proxy.fail_first = 2
    assert (
        main(
            _args(responses, out, fault_proxy.base_url, openai_server.model, "--concurrency", "1", "--max-retries", "3")
        )
        == 0
    )
    assert fault_proxy.requests == 4 and len(_lines(out)) == 2

    out2 = tmp_path / "j2.jsonl"
    fault_proxy.fail_all, fault_proxy.requests = True, 0
    assert main(_args(responses, out2, fault_proxy.base_url, openai_server.model, "--max-retries", "2")) == 1
    assert fault_proxy.requests == 2 * 3
    rows = [json.loads(l) for l in _lines(out2)]
    assert len(rows) == 2 and all("HTTP 500" in r["error"] and r["verdict"] is None for r in rows)
    fault_proxy.fail_all = False
    assert main(_args(responses, out2, fault_proxy.base_url, openai_server.model)) == 0
    rows = [json.loads(l) for l in _lines(out2)]
    assert sorted(r["id"] for r in rows) == ["r0", "r1"] and all(r["error"] is None for r in rows)


def test_client_killed_mid_run_loses_nothing(openai_server, tmp_path):
    responses = _responses(tmp_path, 5)
    out = tmp_path / "j.jsonl"
    args = _args(responses, out, openai_server.ensure_up().base_url, openai_server.model, "--concurrency", "1")
    code = "import sys; from mixtral_ft.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_lines(out, 2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _lines(out)
    assert 2 <= len(before) < 5
    with open(out, "a") as fh:  # what a kill in the middle of a write leaves behind
        fh.write('{"id": "r4", "verdict": {"rel')
    assert main(args) == 0
    after = _lines(out)
    assert after[: len(before)] == before
    assert sorted(json.loads(l)["id"] for l in after) == [f"r{i}" for i in range(5)]
