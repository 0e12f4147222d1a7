"""`mixft judge` without a model: input checks, judgement rows, and the groundedness score."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.backends.base import Result
from mixtral_ft.cli.main import main
from mixtral_ft.errors import InputError
from mixtral_ft.tc.judge import groundedness_score, judgement_row, load_responses

JUDGE = {"backend": "hf", "model": "M", "adapter": None, "prompt_sha256": "x"}
GOOD = ('{"relevance": {"mistake": false, "explanation": "ok"}, "groundedness": {"mistake": true, "mistakes": '
        '[{"text": "10 am", "type": "Evident Conflict", "explanation": "9 am"}]}, "corrected_response": "9 am"}')


def test_judgement_rows():
    row = {"id": "1", "source": "s", "model": "gen", "group": "g", "context": "c", "question": "q", "response": "r"}
    ok = judgement_row(row, Result("1", "```json\n" + GOOD + "\n```", latency_s=0.1), JUDGE, False)
    assert ok["parse_ok"] and ok["hallucinated"] is True and ok["verdict"]["corrected_response"] == "9 am"
    assert ok["judge"] == JUDGE and ok["error"] is None and ok["model"] == "gen"
    bad = judgement_row(row, Result("1", '{"relevance": {"mistake": tru'), JUDGE, False)
    assert bad["parse_ok"] is False and bad["hallucinated"] is None and bad["raw"].startswith("{") and bad["parse_error"]
    failed = judgement_row(row, Result("1", None, error="HTTP 500 (after 5 attempt(s))"), JUDGE, False)
    assert failed["parse_ok"] is False and failed["verdict"] is None and failed["error"].startswith("HTTP 500")


def test_relevance_counted_only_when_asked():
    text = GOOD.replace('"mistake": false, "explanation": "ok"', '"mistake": true, "explanation": "off"') \
        .replace('"mistake": true, "mistakes": [{"text": "10 am", "type": "Evident Conflict", "explanation": "9 am"}]',
                 '"mistake": false, "mistakes": []')
    row = {"id": "1"}
    assert judgement_row(row, Result("1", text), JUDGE, False)["hallucinated"] is False
    assert judgement_row(row, Result("1", text), JUDGE, True)["hallucinated"] is True


def test_load_responses_reports_every_problem(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "context": "c", "question": "q", "response": "r"}\n'
                    '{"id": "b", "context": "c", "question": "q", "response": null, "error": "HTTP 500"}\n'
                    '{"context": 1, "question": "q", "response": "r"}\n')
    with pytest.raises(InputError) as e:
        load_responses(path)
    msg = str(e.value)
    assert f"{path}:2: response: null because generation failed" in msg
    assert f"{path}:3: id:" in msg and f"{path}:3: context:" in msg


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


def test_judge_cli_missing_file(tmp_path, capsys):
    assert main(["judge", "--responses", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "o"), "-m", "m"]) == 2
    assert "--responses file not found" in capsys.readouterr().err
