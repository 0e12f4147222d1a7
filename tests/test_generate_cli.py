"""`mixft generate` without a model: prompts, the Answer: prefix, resumable output files, and
the errors a user sees for bad input or options."""

from __future__ import annotations

import json

import pytest

from mixtral_ft.backends.base import GenerationParams, Result
from mixtral_ft.backends.options import BackendOptions
from mixtral_ft.cli.main import main
from mixtral_ft.errors import UsageError
from mixtral_ft.generate.prompts import chat_messages, rg_prompt, strip_answer_prefix
from mixtral_ft.generate.run import GenerateConfig, output_row
from mixtral_ft.infer.output import ResumableOutput, manifest_path_for


def test_rg_prompt_is_context_qa_load_v2():
    assert rg_prompt("C1", "Q?") == "Context: C1\nQuestion: Q?\n"
    assert rg_prompt(["a", "b"], "Q?") == "Context: a\n\nb\nQuestion: Q?\n"
    (msg,) = chat_messages("C1", "Q?")
    assert msg["role"] == "user" and msg["content"].endswith("Context: C1\n\nQuestion: Q?")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: Paris.", ("Paris.", True)),
        (" Answer:Paris.\n", ("Paris.", True)),
        ("Answer: \nLine one\nline two", ("Line one\nline two", True)),
        ("Paris.", ("Paris.", False)),
        ("The Answer: is Paris", ("The Answer: is Paris", False)),
        ("", ("", False)),
    ],
)
def test_strip_answer_prefix(text, expected):
    assert strip_answer_prefix(text) == expected


def test_generation_params_validation():
    assert GenerationParams().greedy and GenerationParams().to_dict()["do_sample"] is False
    with pytest.raises(UsageError, match="max-new-tokens"):
        GenerationParams(max_new_tokens=0)
    with pytest.raises(UsageError, match="top-p"):
        GenerationParams(top_p=0)


def test_output_row_fields(tmp_path):
    cfg = GenerateConfig(data=tmp_path / "d", out=tmp_path / "o", backend=BackendOptions("hf", model="M", adapter="A"))
    row = {"id": "1", "source": "s", "group": "g", "context": "c", "question": "q", "answer": "a", "extra": 5}
    out = output_row(row, Result("1", "Answer: hi", 10, 3, 0.5, "stop"), cfg)
    assert out["response"] == "hi" and out["answer_prefix"] is True and out["reference_answer"] == "a"
    assert out["model"] == {"name": "M", "adapter": "A", "backend": "hf", "prompt": "rg"}
    assert out["extra"] == 5 and "answer" not in out and out["error"] is None
    failed = output_row(row, Result("1", None, error="HTTP 500"), cfg)
    assert failed["response"] is None and failed["error"] == "HTTP 500"


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def _open(out, settings_sha256, force=False):
    res = ResumableOutput(out, settings_sha256, force=force)
    res.open()
    return res


def test_resumable_output_skips_done_retries_failed_and_cuts_torn_tail(tmp_path):
    out = tmp_path / "gen.jsonl"
    manifest_path_for(out).write_text(json.dumps({"settings_sha256": "S"}))
    _write(
        out,
        [
            {"id": "a", "error": None},
            {"id": "b", "error": "HTTP 500"},
            {"id": "c", "error": None},
            {"id": "a", "error": None},
        ],
        tail='{"id": "d", "err',
    )
    inputs = [{"id": k} for k in "abcd"]
    with ResumableOutput(out, "S") as res:
        plan = res.resume(inputs)
        assert [r["id"] for r in plan.pending] == ["b", "d"] and plan.done == 2 and plan.retried == 1
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "c"]
        res.append({"id": "b", "error": None})
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "c", "b"]
    with pytest.raises(UsageError, match="different settings"):
        _open(out, "OTHER")
    res = _open(out, "OTHER", force=True)
    assert res.resume(inputs).done == 0 and not out.exists() and not manifest_path_for(out).exists()


def test_existing_output_without_manifest_is_refused(tmp_path):
    out = tmp_path / "gen.jsonl"
    _write(out, [{"id": "a"}])
    with pytest.raises(UsageError, match="manifest.*missing"):
        _open(out, "S")


def test_existing_output_with_corrupt_manifest_says_corrupt(tmp_path):
    """A torn or hand-broken manifest is reported as corrupt, with the parse error, not as missing."""
    out = tmp_path / "gen.jsonl"
    _write(out, [{"id": "a", "error": None}])
    manifest_path_for(out).write_text('{"settings_sha256": "S", "start')
    with pytest.raises(UsageError) as e:
        _open(out, "S")
    message = str(e.value)
    assert "corrupt manifest" in message and "invalid JSON at line 1" in message and "missing" not in message
    assert "--force" in message
    manifest_path_for(out).write_text('["a list"]')
    with pytest.raises(UsageError, match="corrupt manifest: expected a JSON object"):
        _open(out, "S")


def test_cli_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text('{"id": "1", "context": "c", "question": "q"}\n{"id": "1", "question": 3}\n')
    out = tmp_path / "gen.jsonl"
    assert main(["generate", "--data", str(data), "--out", str(out), "-m", "x", "--backend", "hff"]) == 2
    assert "Unknown backend 'hff'. Did you mean 'hf'?" in capsys.readouterr().err
    assert main(["generate", "--data", str(data), "--out", str(out), "-m", "x", "--backend", "openai"]) == 2
    assert "--base-url" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--data",
                str(data),
                "--out",
                str(out),
                "-m",
                "x",
                "--backend",
                "openai",
                "--base-url",
                "http://127.0.0.1:9/v1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{data}:2: id: duplicate id '1'" in err and f"{data}:2: context:" in err and f"{data}:2: question:" in err
    assert not out.exists()
    assert main(["generate", "--data", str(tmp_path / "nope.jsonl"), "--out", str(out), "-m", "x"]) == 2
    assert "not found" in capsys.readouterr().err


def test_failed_endpoint_items_are_written_and_exit_nonzero(tmp_path, capsys, monkeypatch):
    """Every id gets a row even when the endpoint is down; a re-run retries exactly those."""
    from support.fixtures_serve import free_port

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-never-written")
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "context": "c", "question": "q"}) + "\n" for i in range(3)))
    out = tmp_path / "gen.jsonl"
    args = [
        "generate",
        "--data",
        str(data),
        "--out",
        str(out),
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
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "3 item(s) failed" in captured.err and "re-run" in captured.err
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["q0", "q1", "q2"] and all(r["error"] for r in rows)
    manifest = manifest_path_for(out).read_text()
    assert "sk-secret" not in manifest + out.read_text() + captured.err + captured.out
    m = json.loads(manifest)
    assert m["backend"]["api_key_env"] == "OPENAI_API_KEY" and m["kind"] == "generate"
    assert m["summary"]["failed"] == 3 and m["quantization"] is None
    assert main(args) == 1
    assert len(out.read_text().splitlines()) == 3 and "3 failed row(s) retried" in capsys.readouterr().err


def test_generate_and_judge_share_one_backend_option_group():
    """Same flags, names, defaults and help in both commands (only --max-new-tokens' default differs),
    and both hand the command one BackendOptions."""
    import typer

    from mixtral_ft.cli.main import app

    root = typer.main.get_command(app)
    options = {}
    for name in ("generate", "judge"):
        cmd = root.commands[name]
        options[name] = {
            p.name: (p.opts, p.default, p.help)
            for p in cmd.params
            if getattr(p, "rich_help_panel", None) in ("Model and backend", "Decoding")
        }
    assert options["generate"].keys() == options["judge"].keys()
    assert {
        "model",
        "adapter",
        "backend",
        "base_url",
        "endpoint_mode",
        "batch_size",
        "concurrency",
        "seed",
        "stop",
        "max_new_tokens",
    } <= options["generate"].keys()
    for key in options["generate"]:
        if key != "max_new_tokens":
            assert options["generate"][key] == options["judge"][key], key
    assert (options["generate"]["max_new_tokens"][1], options["judge"]["max_new_tokens"][1]) == (256, 1024)


def test_backend_options_refuse_the_other_backends_flags():
    with pytest.raises(UsageError, match="Did you mean 'openai'"):
        BackendOptions("opnai", model="m")
    with pytest.raises(UsageError, match="--adapter is for the hf backend"):
        BackendOptions("openai", model="m", base_url="http://x/v1", adapter="a")
    with pytest.raises(UsageError, match="--load-in-4bit is for the hf backend"):
        BackendOptions("openai", model="m", base_url="http://x/v1", load_in_4bit=True)
    with pytest.raises(UsageError, match="--base-url is for the openai backend"):
        BackendOptions("hf", model="m", base_url="http://x/v1")
    with pytest.raises(UsageError, match="endpoint mode"):
        BackendOptions("openai", model="m", base_url="http://x/v1", endpoint_mode="chatt")
    opts = BackendOptions("openai", model="m", base_url="http://x/v1", concurrency=3)
    assert opts.mode == "completions" and opts.constructor_options()["concurrency"] == 3
    assert BackendOptions("hf", model="m").mode is None
