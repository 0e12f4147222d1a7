"""`mixft judge` without a model: input checks, judgement rows, and the groundedness score."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.backends.base import Result
from mixtral_ft.cli.main import main
from mixtral_ft.errors import InputError
from mixtral_ft.infer.rows import CONTEXT, QUESTION, RESPONSE, load_rows
from mixtral_ft.tc.judge import groundedness_score, groundedness_value_offset, judgement_row

JUDGE = {"backend": "hf", "model": "M", "adapter": None, "prompt_sha256": "x"}
GOOD = (
    '{"relevance": {"mistake": false, "explanation": "ok"}, "groundedness": {"mistake": true, "mistakes": '
    '[{"text": "10 am", "type": "Evident Conflict", "explanation": "9 am"}]}, "corrected_response": "9 am"}'
)


def test_judgement_rows():
    row = {"id": "1", "source": "s", "model": "gen", "group": "g", "context": "c", "question": "q", "response": "r"}
    ok = judgement_row(row, Result("1", "```json\n" + GOOD + "\n```", latency_s=0.1), JUDGE, False)
    assert ok["parse_ok"] and ok["hallucinated"] is True and ok["verdict"]["corrected_response"] == "9 am"
    assert ok["judge"] == JUDGE and ok["error"] is None and ok["model"] == "gen"
    bad = judgement_row(row, Result("1", '{"relevance": {"mistake": tru'), JUDGE, False)
    assert (
        bad["parse_ok"] is False and bad["hallucinated"] is None and bad["raw"].startswith("{") and bad["parse_error"]
    )
    failed = judgement_row(row, Result("1", None, error="HTTP 500 (after 5 attempt(s))"), JUDGE, False)
    assert failed["parse_ok"] is False and failed["verdict"] is None and failed["error"].startswith("HTTP 500")


def test_relevance_counted_only_when_asked():
    text = GOOD.replace('"mistake": false, "explanation": "ok"', '"mistake": true, "explanation": "off"').replace(
        '"mistake": true, "mistakes": [{"text": "10 am", "type": "Evident Conflict", "explanation": "9 am"}]',
        '"mistake": false, "mistakes": []',
    )
    row = {"id": "1"}
    assert judgement_row(row, Result("1", text), JUDGE, False)["hallucinated"] is False
    assert judgement_row(row, Result("1", text), JUDGE, True)["hallucinated"] is True


def test_responses_loader_reports_every_problem(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"id": "a", "context": "c", "question": "q", "response": "r"}\n'
        '{"id": "b", "context": "c", "question": "q", "response": null, "error": "HTTP 500"}\n'
        '\n{"context": 1, "question": "q", "response": "r"}\n'
    )
    with pytest.raises(InputError) as e:
        load_rows(path, (CONTEXT, QUESTION, RESPONSE))
    msg = str(e.value)
    assert f"{path}:2: response: null because generation failed" in msg
    assert f"{path}:4: id:" in msg and f"{path}:4: context:" in msg  # true line numbers: the blank line counts


class _CharTokenizer:
    """One token per character (real enough to test the offset arithmetic)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def test_groundedness_score_reads_the_value_step():
    text = '{"groundedness": {"mistake": true, "mistakes": []}}'
    ids = [ord(c) for c in text]
    cands = {ord("t"): True, ord("f"): False}
    logprobs = [[-5.0, -5.0]] * len(ids)
    k = text.index("t", text.index("mistake") + 8)
    logprobs[k] = [-0.2231435513, -1.6094379124]  # p(t)=0.8, p(f)=0.2
    assert groundedness_score(text, ids, logprobs, cands, _CharTokenizer()) == pytest.approx(0.8)
    assert groundedness_score('{"relevance": 1}', ids, logprobs, cands, _CharTokenizer()) is None


MISTAKES = '[{"text": "10 am", "type": "Evident Conflict", "explanation": "the context says {9 am}"}]'


@pytest.mark.parametrize(
    "text",
    [
        # the trained order
        '{"relevance": {"mistake": false, "explanation": "ok"}, "groundedness": {"mistake": true, "mistakes": '
        + MISTAKES
        + '}, "corrected_response": null}',
        # `mistakes` (with nested objects and braces in strings) written before `mistake`
        '{"groundedness": {"mistakes": ' + MISTAKES + ', "mistake": true}, "relevance": {"mistake": false, '
        '"explanation": "ok"}, "corrected_response": null}',
        # groundedness last, a decoy `"mistake": false` inside a string, code fence and prose around it
        'Here:\n```json\n{"corrected_response": "say \\"mistake\\": false", "relevance": {"explanation": '
        '"\\"groundedness\\": {\\"mistake\\": false}", "mistake": false}, "groundedness": {"mistakes": '
        + MISTAKES
        + ',\n  "mistake" :  true}}\n```\nDone.',
    ],
)
def test_groundedness_value_is_found_in_any_key_order(text):
    start = groundedness_value_offset(text)
    assert start is not None and text[start : start + 4] == "true"
    ids = [ord(c) for c in text]
    logprobs = [[-5.0, -5.0]] * len(ids)
    logprobs[start] = [-0.2231435513, -1.6094379124]
    assert groundedness_score(
        text, ids, logprobs, {ord("t"): True, ord("f"): False}, _CharTokenizer()
    ) == pytest.approx(0.8)


def test_no_groundedness_value_means_no_offset():
    assert groundedness_value_offset('{"groundedness": {"mistake": "yes"}}') is None
    assert groundedness_value_offset('{"groundedness": {"mistake": tru') is None
    assert groundedness_value_offset("no json here") is None


def test_judge_cli_missing_file(tmp_path, capsys):
    assert main(["judge", "--responses", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"), "-m", "m"]) == 2
    assert "--responses file not found" in capsys.readouterr().err


def _responses(tmp_path, n=2):
    path = tmp_path / "responses.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "context": "c", "question": "q", "response": "r"}) + "\n" for i in range(n))
    )
    return path


def test_scoring_off_is_said_and_recorded(tmp_path, capsys):
    """The openai backend cannot score: the run says so on stderr and in the manifest, instead of
    leaving every score null without a word; --no-score is recorded but needs no note."""
    from support.fixtures_serve import free_port

    responses, out = _responses(tmp_path), tmp_path / "j.jsonl"
    base = [
        "judge",
        "--responses",
        str(responses),
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
    assert main(base + ["--out", str(out)]) == 1  # the endpoint is down: every item fails, and says so
    err = capsys.readouterr().err
    assert "note: no score (groundedness probability) in any row: the openai backend returns no token" in err
    m = json.loads((tmp_path / "j.jsonl.manifest.json").read_text())
    assert m["scoring"] == {"enabled": False, "off_because": m["scoring"]["off_because"]}
    assert "openai backend" in m["scoring"]["off_because"] and m["settings"]["score"] is False
    assert m["kind"] == "judge" and m["inputs"][0]["role"] == "responses" and m["inputs"][0]["rows"] == 2

    out2 = tmp_path / "j2.jsonl"
    assert main(base + ["--out", str(out2), "--no-score"]) == 1
    assert "note: no score" not in capsys.readouterr().err
    assert json.loads((tmp_path / "j2.jsonl.manifest.json").read_text())["scoring"]["off_because"] == "--no-score"


def test_scoring_off_reasons():
    from mixtral_ft.backends.base import GenerationParams
    from mixtral_ft.backends.options import BackendOptions
    from mixtral_ft.tc.judge import JudgeConfig, scoring_off_reason

    hf = BackendOptions("hf", model="m")
    cfg = JudgeConfig(responses=None, out=None, backend=hf)
    assert scoring_off_reason(cfg) is None
    sampled = JudgeConfig(responses=None, out=None, backend=hf, params=GenerationParams(temperature=0.7))
    assert "sampling" in scoring_off_reason(sampled)
    assert "no tokenizer" in scoring_off_reason(cfg, backend=object())
