"""One manifest type for every stage: the common keys, hashes that match the files, secrets
kept out of the recorded command, and a corrupt manifest named as such."""

from __future__ import annotations

import hashlib
import json

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.util.manifest import COMMON_KEYS, MANIFEST_SCHEMA, Manifest, ManifestError, read_manifest
from mixtral_ft.util.provenance import scrub_argv


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_common(m: dict, kind: str) -> None:
    assert set(COMMON_KEYS) <= set(m) and m["schema"] == MANIFEST_SCHEMA and m["kind"] == kind
    assert m["command"][0] == "mixft" and m["environment"]["packages"]["mixtral-ft"]
    assert len(m["settings_sha256"]) == 64 and m["started"] <= m["updated"]
    for entry in m["inputs"] + list(m["outputs"].values()):
        assert len(entry["sha256"]) == 64 and entry["bytes"] >= 0


def test_prepare_generate_and_judge_write_the_same_manifest_type(tmp_path, repo_root, capsys, monkeypatch):
    from support.fixtures_serve import free_port

    qa = repo_root / "data" / "sample_qa.jsonl"
    prepared = tmp_path / "rg"
    assert main(["prepare", "rg", str(qa), "--out", str(prepared), "--test-size", "3", "--seed", "1"]) == 0
    m = json.loads((prepared / "manifest.json").read_text())
    _check_common(m, "prepare-rg")
    assert m["summary"]["test"] == 3 and m["settings"]["seed"] == 1
    assert m["inputs"][0]["sha256"] == _sha(qa)
    assert m["outputs"]["test.jsonl"]["sha256"] == _sha(prepared / "test.jsonl")

    # generate, with credentials in the URL that must reach no file, and a dead endpoint
    # (a key in the URL's query is refused outright: tests/test_reliability.py)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-written")
    gens = tmp_path / "gens.jsonl"
    url = f"http://alice:hunter2@127.0.0.1:{free_port()}/v1"
    assert (
        main(
            [
                "generate",
                "--data",
                str(prepared / "test.jsonl"),
                "--out",
                str(gens),
                "-m",
                "m",
                "--backend",
                "openai",
                "--base-url",
                url,
                "--max-retries",
                "0",
                "--timeout",
                "2",
            ]
        )
        == 1
    )
    text = (tmp_path / "gens.jsonl.manifest.json").read_text()
    for secret in ("hunter2", "alice", "sk-never-written"):
        assert secret not in text + gens.read_text() + capsys.readouterr().err
    m = json.loads(text)
    _check_common(m, "generate")
    assert m["inputs"][0] == {
        **m["inputs"][0],
        "path": str(prepared / "test.jsonl"),
        "rows": 3,
        "role": "data",
        "sha256": _sha(prepared / "test.jsonl"),
    }
    assert m["outputs"]["gens.jsonl"]["sha256"] == _sha(gens) and m["outputs"]["gens.jsonl"]["rows"] == 3
    assert m["summary"]["failed"] == 3 and m["summary"]["total"] == 3 and "quantization" in m

    # judge over a responses file
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"id": "r1", "context": "c", "question": "q", "response": "r"}) + "\n")
    verdicts = tmp_path / "verdicts.jsonl"
    assert (
        main(
            [
                "judge",
                "--responses",
                str(responses),
                "--out",
                str(verdicts),
                "-m",
                "m",
                "--backend",
                "openai",
                "--base-url",
                f"http://127.0.0.1:{free_port()}/v1",
                "--max-retries",
                "0",
                "--timeout",
                "2",
            ]
        )
        == 1
    )
    m = json.loads((tmp_path / "verdicts.jsonl.manifest.json").read_text())
    _check_common(m, "judge")
    assert m["summary"]["judged"] == 0 and m["summary"]["hallucinated_share"] is None


def test_scrub_argv():
    argv = [
        "mixft",
        "judge",
        "--base-url",
        "https://bob:pw@h/v1?token=t0k&x=1",
        "--api-key-env",
        "MY_KEY",
        "--tokenizer",
        "tok",
        "--max-new-tokens",
        "8",
        "--set",
        "wandb_api_key=abc",
        "--hub-token",
        "hf_x",
        "--password=p",
        "live=a.csv",
        "--base-url=http://u:p@x/v1",
    ]
    assert scrub_argv(argv) == [
        "mixft",
        "judge",
        "--base-url",
        "https://***@h/v1?token=***&x=1",
        "--api-key-env",
        "MY_KEY",
        "--tokenizer",
        "tok",
        "--max-new-tokens",
        "8",
        "--set",
        "wandb_api_key=***",
        "--hub-token",
        "***",
        "--password=***",
        "live=a.csv",
        "--base-url=http://***@x/v1",
    ]


def test_extra_keys_never_shadow_common_ones(tmp_path):
    with pytest.raises(ValueError, match="summary"):
        Manifest(kind="generate", extra={"summary": 1}).to_dict()
    with pytest.raises(ValueError, match="unknown manifest kind"):
        Manifest(kind="generation")
    path = Manifest(kind="judge", settings={"a": 1}, extra={"backend": None}).write(tmp_path / "m.json")
    m = read_manifest(path)
    assert m["settings_sha256"] == hashlib.sha256(b'{"a":1}').hexdigest() and m["backend"] is None


def test_read_manifest_missing_or_corrupt(tmp_path):
    assert read_manifest(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"kind": "judge",')
    with pytest.raises(ManifestError, match="bad.json: corrupt manifest: invalid JSON at line 1"):
        read_manifest(tmp_path / "bad.json")


def test_eval_and_report_write_the_same_manifest_type(tmp_path, repo_root):
    """``eval`` and ``report`` dirs carry the common Manifest beside their own files."""
    labeled = repo_root / "data" / "sample_tc_responses.jsonl"
    ev = tmp_path / "eval-rg"
    assert main(["eval", "rg", "--verdicts", str(labeled), "--out", str(ev)]) == 0
    m = json.loads((ev / "manifest.json").read_text())
    _check_common(m, "eval")
    assert m["settings"]["eval"] == "rg" and m["inputs"][0]["sha256"] == _sha(labeled)
    assert m["outputs"]["results.json"]["sha256"] == _sha(ev / "results.json")
    report = tmp_path / "report"
    assert main(["report", str(ev), "--out", str(report)]) == 0
    m = json.loads((report / "manifest.json").read_text())
    _check_common(m, "report")
    assert m["inputs"][0]["sha256"] == _sha(ev / "results.json")
    assert m["outputs"]["report.html"]["sha256"] == _sha(report / "report.html")
