"""Issue 13, fast tier: every class of failure with real processes and real signals.

Each test starts real ``mixft`` processes (``python -m mixtral_ft.cli.main``), stops them with real
signals, races them against each other, fills a real small filesystem (tmpfs, where the machine
lets us mount one) or injects a full disk at the write layer (tests/faults), and checks what is
left: exit codes, the one line on stderr, files, leftovers, live processes. The training states,
and generate/judge with a real model, are in ``test_reliability_slow.py``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from support.fixtures_models import rg_rows, write_split
from support.reliability_helpers import (
    alive,
    descendants,
    fill,
    hold_lock,
    kill,
    leftovers,
    lock_held,
    mount_tmpfs,
    run,
    silent_endpoint,
    start,
    stop,
    unmount,
    wait_until,
    write_qa,
)

BIG_ROWS = 100_000  # ~30 MB: the read pass runs for seconds, long enough to be stopped part-way


@pytest.fixture(scope="module")
def big_qa(tmp_path_factory) -> Path:
    return write_qa(tmp_path_factory.mktemp("big") / "big.jsonl", BIG_ROWS)


def _staging(out: Path) -> list[Path]:
    return [p for p in out.parent.glob(f".{out.name}.staging-*")]


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


# ------------------------------------------------------------------ 1. signals: 130 / 143 / 129, one line


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_prepare_stopped_by_a_signal_exits_128_plus_n_and_leaves_nothing(tmp_path, big_qa, sig, code):
    out = tmp_path / "prepared"
    proc = start(["prepare", "rg", big_qa, "--out", out, "--workers", "2"], tmp_path)
    wait_until(lambda: _staging(out), proc=proc, what="the staging folder")
    wait_until(lambda: len(descendants(proc.pid)) >= 2, timeout=60, proc=proc, what="the read-pass workers")
    workers = [pid for pid, _ in descendants(proc.pid)]
    rc, _out, err = stop(proc, sig)
    assert rc == code, err
    assert err.strip().splitlines()[-1] == (
        f"interrupted ({signal.Signals(sig).name}): nothing was written to {out}; run the same command again"
    )
    _no_traceback(err)
    assert not out.exists() and leftovers(out) == []
    wait_until(lambda: not alive(workers), timeout=10, what="the workers to exit")


def test_prepare_ctrl_c_with_force_keeps_the_old_output(tmp_path, big_qa):
    out = tmp_path / "prepared"
    assert run(["prepare", "rg", write_qa(tmp_path / "small.jsonl", 50), "--out", out], tmp_path).returncode == 0
    before = (out / "train.jsonl").read_bytes()
    proc = start(["prepare", "rg", big_qa, "--out", out, "--force"], tmp_path)
    wait_until(lambda: _staging(out), proc=proc, what="the staging folder")
    rc, _, err = stop(proc, signal.SIGINT)
    assert rc == 130 and f"{out} is unchanged (the new output was not finished)" in err
    assert (out / "train.jsonl").read_bytes() == before and leftovers(out) == []


def test_generate_stopped_while_waiting_on_an_endpoint(tmp_path):
    """SIGTERM while requests hang on a silent endpoint: exit 143 at once (not after --timeout), the
    note says how many rows are done, and the manifest says the run stopped and why."""
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "context": "c", "question": "q"}) + "\n" for i in range(3)))
    out = tmp_path / "gen.jsonl"
    with silent_endpoint() as url:
        proc = start(
            [
                "generate",
                "--data",
                data,
                "--out",
                out,
                "-m",
                "m",
                "--backend",
                "openai",
                "--base-url",
                url,
                "--timeout",
                "120",
                "--max-retries",
                "0",
            ],
            tmp_path,
        )
        wait_until(lambda: (out.parent / (out.name + ".manifest.json")).exists(), proc=proc, what="the manifest")
        rc, _, err = stop(proc, signal.SIGTERM, timeout=30)
    assert rc == 143, err
    assert err.strip().splitlines()[-1] == (
        f"interrupted (SIGTERM): 0 of 3 row(s) done in {out} (manifest "
        "updated); run the same command again to do the other 3"
    )
    manifest = json.loads((tmp_path / "gen.jsonl.manifest.json").read_text())
    assert manifest["summary"]["stopped"] == "SIGTERM" and manifest["summary"]["done"] == 0
    assert leftovers(out) == []


def test_a_keyboard_interrupt_typer_turns_into_a_return_value_is_not_exit_0(tmp_path, monkeypatch):
    """The root cause of "Ctrl-C reports success": outside standalone mode Typer turns a
    KeyboardInterrupt into Exit(130) and *returns* 130, which `main` used to drop (exit 0)."""
    import mixtral_ft.prepare.pipeline as pipeline
    from mixtral_ft.cli.main import main

    def interrupted(_opts, _task):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_prepare", interrupted)
    assert main(["prepare", "rg", str(write_qa(tmp_path / "qa.jsonl", 3)), "--out", str(tmp_path / "o")]) == 130


# ------------------------------------------------------------------ 2. leftovers of processes that could not clean up


def test_staging_of_a_killed_run_is_removed_by_the_next_run(tmp_path, big_qa):
    out = tmp_path / "prepared"
    proc = start(["prepare", "rg", big_qa, "--out", out], tmp_path)
    wait_until(lambda: _staging(out), proc=proc, what="the staging folder")
    kill(proc)  # SIGKILL: no code runs, the staging folder stays
    (stale,) = _staging(out)
    assert f".staging-{proc.pid}-" in stale.name  # the owner's pid is in the name
    done = run(["prepare", "rg", write_qa(tmp_path / "small.jsonl", 50), "--out", out], tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"removed 1 leftover(s) of interrupted runs beside {out}" in done.stderr
    assert f"{stale.name} (pid {proc.pid})" in done.stderr
    assert leftovers(out) == [] and (out / "train.jsonl").exists()


# ------------------------------------------------------------------ 3. two writers: the second refuses


def test_two_prepare_runs_on_one_out(tmp_path, big_qa):
    out = tmp_path / "prepared"
    first = start(["prepare", "rg", big_qa, "--out", out], tmp_path)
    wait_until(lambda: lock_held(out), proc=first, what="the first run's lock")
    second = run(["prepare", "rg", write_qa(tmp_path / "small.jsonl", 50), "--out", out, "--force"], tmp_path)
    assert second.returncode == 75
    assert f"{out}: in use by pid {first.pid}" in second.stderr and "mixft prepare rg" in second.stderr
    _no_traceback(second.stderr)
    rc, _, err = stop(first, signal.SIGINT)
    assert rc == 130 and not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("command", ["generate", "judge"])
def test_two_inference_runs_on_one_out(tmp_path, command):
    """The issue's case: two `generate` runs on one --out both exited 0 and wrote every id twice."""
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"q{i}", "context": "c", "question": "q", "response": "r"}) + "\n" for i in range(3))
    )
    out = tmp_path / "out.jsonl"
    role = "--data" if command == "generate" else "--responses"
    with silent_endpoint() as url:
        args = [
            command,
            role,
            data,
            "--out",
            out,
            "-m",
            "m",
            "--backend",
            "openai",
            "--base-url",
            url,
            "--timeout",
            "120",
            "--max-retries",
            "0",
        ]
        first = start(args, tmp_path)
        wait_until(lambda: lock_held(out), proc=first, what="the first run's lock")
        second = run(args, tmp_path)
        assert second.returncode == 75 and f"in use by pid {first.pid}" in second.stderr
        assert f"mixft {command}" in second.stderr
        rc, _, err = stop(first, signal.SIGINT, timeout=30)
    assert rc == 130
    assert not out.exists() or out.read_text() == ""  # nothing written twice (nothing answered)


def _verdicts(path: Path, n: int = 6, model: str = "m1") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        h = i % 3 == 0
        rows.append(
            {
                "id": f"q{i}",
                "source": "s",
                "model": model,
                "parse_ok": True,
                "hallucinated": h,
                "verdict": {
                    "relevance": {"mistake": False, "explanation": ""},
                    "groundedness": {"mistake": h, "mistakes": []},
                    "corrected_response": None,
                },
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _responses(path: Path, n: int = 40) -> Path:
    """Labeled responses for ``prepare tc`` (docs/formats.md §3)."""
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{i}",
                    "context": f"Fact {i}.",
                    "question": f"Q{i}?",
                    "response": f"Answer {i}.",
                    "hallucinated": i % 3 == 0,
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def _run_dir(path: Path, base: Path) -> Path:
    """A finished run of ``base`` (the tiny Mixtral) with a real LoRA adapter, as `mixft merge` reads it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), cfg).save_pretrained(path / "output")
    ck = path / "output" / "checkpoint-4"
    ck.mkdir()
    (ck / "trainer_state.json").write_text(
        json.dumps({"global_step": 4, "max_steps": 4, "epoch": 1.0, "log_history": []})
    )
    (path / "axolotl.yml").write_text(f"base_model: {base}\nadapter: lora\n")
    (path / "manifest.json").write_text(json.dumps({"attempts": [{"outcome": "finished", "exit_status": 0}]}))
    return path


@pytest.mark.parametrize("case", ["prepare tc", "eval rg", "eval compare", "report", "train", "merge"])
def test_every_writer_refuses_an_output_another_process_holds(tmp_path, case, request):
    """The lock is one mechanism (util.lock) in every writer: while another process holds the
    output, each command refuses with exit 75 and the holder's pid, and writes nothing."""
    v = _verdicts(tmp_path / "v.jsonl")
    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    target = tmp_path / "out"
    args = {
        "prepare tc": ["prepare", "tc", _responses(tmp_path / "r.jsonl"), "--out", target],
        "eval rg": ["eval", "rg", "--verdicts", v, "--label", "x", "--out", target],
        "eval compare": ["eval", "compare", v, v, "--out", target],
        "report": ["report", tmp_path / "ev", "--out", target],
        "train": ["train", "rg", "--data", data, "--profile", "cpu", "--run-dir", target],
        "merge": ["merge", tmp_path / "run", "--out", target],
    }[case]
    if case == "merge":
        _run_dir(tmp_path / "run", request.getfixturevalue("tiny_mixtral_dir"))
    if case == "report":
        assert run(["eval", "rg", "--verdicts", v, "--label", "x", "--out", tmp_path / "ev"], tmp_path).returncode == 0
    holder = hold_lock(target, tmp_path)
    try:
        res = run(args, tmp_path)
    finally:
        kill(holder)
    assert res.returncode == 75, res.stderr
    assert f"{target}: in use by pid {holder.pid}" in res.stderr
    _no_traceback(res.stderr)
    assert not target.exists() and leftovers(target) == []


# ------------------------------------------------------------------ 5. never destroy an input or the working directory


def test_out_equal_to_the_input_with_force_is_refused(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"id": "a", "context": "c", "question": "q", "response": "r"}) + "\n")
    before = data.read_bytes()
    for args in (
        ["generate", "--data", data, "--out", data, "--force", "-m", "m"],
        ["judge", "--responses", data, "--out", tmp_path / "." / "test.jsonl", "--force", "-m", "m"],
    ):
        res = run(args, tmp_path)
        assert res.returncode == 2 and "is the input" in res.stderr and "never deletes or overwrites" in res.stderr
        _no_traceback(res.stderr)
    assert data.read_bytes() == before


@pytest.mark.parametrize("out", [".", "..", "./", "inputs"])
def test_prepare_out_of_the_working_directory_or_its_inputs_is_refused(tmp_path, out):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    qa = write_qa(inputs / "qa.jsonl", 20)
    res = run(["prepare", "rg", "inputs/qa.jsonl", "--out", out, "--force"], tmp_path)
    assert res.returncode == 2, res.stderr
    assert ("working directory" in res.stderr) if out != "inputs" else ("contains the input" in res.stderr)
    _no_traceback(res.stderr)
    assert qa.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # no ..old-*, no staging
    assert sorted(p.name for p in inputs.iterdir()) == ["qa.jsonl"]


def test_eval_report_train_merge_never_replace_their_inputs(tmp_path, tiny_mixtral_dir):
    v = _verdicts(tmp_path / "ev" / "v.jsonl")
    assert run(["eval", "rg", "--verdicts", v, "--label", "x", "--out", tmp_path / "e1"], tmp_path).returncode == 0
    data = write_split(tmp_path / "data", rg_rows("train", 4), rg_rows("test", 2))
    runs = _run_dir(tmp_path / "run", tiny_mixtral_dir)
    cases = [
        (["eval", "rg", "--verdicts", v, "--label", "x", "--out", tmp_path / "ev", "--force"], "contains the input"),
        (["report", tmp_path / "e1", "--out", tmp_path / "e1", "--force"], "is the input"),
        (["train", "rg", "--data", data, "--profile", "cpu", "--run-dir", data], "is the input"),
        (["merge", runs, "--out", runs, "--force"], "is the input"),
    ]
    for args, message in cases:
        res = run(args, tmp_path)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
    assert v.exists() and (tmp_path / "e1" / "results.json").exists() and (data / "train.jsonl").exists()
    assert (runs / "axolotl.yml").exists()


# ------------------------------------------------------------------ 4. resume over changed inputs (the mechanism)


def test_resume_keeps_rows_made_from_the_same_input_and_redoes_the_changed(tmp_path):
    from mixtral_ft.infer.output import ResumableOutput, manifest_path_for
    from mixtral_ft.infer.rows import row_input_sha256

    inputs = [{"id": k, "question": k} for k in "abcd"]
    out = tmp_path / "gen.jsonl"
    manifest_path_for(out).write_text(json.dumps({"settings_sha256": "S"}))
    rows = [{"id": r["id"], "error": None, "input_sha256": row_input_sha256(r)} for r in inputs[:3]]
    rows.append({"id": "d", "error": None})  # written before rows were stamped: cannot be trusted
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inputs[1] = {"id": "b", "question": "b, edited"}
    with ResumableOutput(out, "S", inputs=[tmp_path / "data.jsonl"]) as res:
        plan = res.resume(inputs, row_input_sha256)
    assert [r["id"] for r in plan.pending] == ["b", "d"] and (plan.done, plan.changed) == (2, 2)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "c"]


# ------------------------------------------------------------------ 7. full disk


@pytest.fixture()
def small_fs(tmp_path):
    """A 2 MiB tmpfs, or a skip saying why (the injected-fault tests below always run)."""
    mnt = tmp_path / "small"
    if not mount_tmpfs(mnt, "2m"):
        pytest.skip(
            "cannot mount a tmpfs here (not root, or mounts not permitted in this container); "
            "the injected full-disk tests cover the same paths"
        )
    yield mnt
    unmount(mnt)


def _check_full_disk_message(res, where: Path) -> None:
    assert res.returncode == 3, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: no space left on device writing {where}: ") and "free in" in lines[-1]
    assert "it needs" in lines[-1]
    _no_traceback(res.stderr)


def test_prepare_on_a_real_full_filesystem(tmp_path, small_fs):
    qa = write_qa(tmp_path / "qa.jsonl", 12_000)  # ~3.6 MB in, more than the 2 MiB filesystem holds
    out = small_fs / "prepared"
    res = run(["prepare", "rg", qa, "--out", out], tmp_path)
    _check_full_disk_message(res, out)
    assert "it needs about" in res.stderr  # the estimate: about twice the input
    assert sorted(p.name for p in small_fs.iterdir()) == []  # nothing half-written, no staging


def test_eval_and_report_on_a_real_full_filesystem(tmp_path, small_fs):
    v = _verdicts(tmp_path / "v.jsonl")
    assert run(["eval", "rg", "--verdicts", v, "--label", "x", "--out", tmp_path / "ev"], tmp_path).returncode == 0
    fill(small_fs, 1024)
    for args, out in (
        (["eval", "rg", "--verdicts", v, "--label", "x", "--out", small_fs / "e"], small_fs / "e"),
        (["report", tmp_path / "ev", "--out", small_fs / "r"], small_fs / "r"),
    ):
        res = run(args, tmp_path)
        _check_full_disk_message(res, out)
        assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


@pytest.mark.parametrize("case", ["prepare rg", "prepare tc", "eval rg", "report", "generate", "judge"])
def test_full_disk_injected_at_the_write_layer(tmp_path, case):
    """The same checks where no filesystem can be mounted: every write under DIR fails with ENOSPC
    once this process has written N bytes there (tests/faults/sitecustomize.py)."""
    full = tmp_path / "full"
    full.mkdir()
    v = _verdicts(tmp_path / "v.jsonl")
    if case == "report":
        assert run(["eval", "rg", "--verdicts", v, "--label", "x", "--out", tmp_path / "ev"], tmp_path).returncode == 0
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"id": f"q{i}", "context": "c", "question": "q", "response": "r"}) + "\n" for i in range(3))
    )
    out = full / ("out.jsonl" if case in ("generate", "judge") else "out")
    args = {
        "prepare rg": ["prepare", "rg", write_qa(tmp_path / "qa.jsonl", 2000), "--out", out],
        "prepare tc": ["prepare", "tc", _responses(tmp_path / "r.jsonl"), "--out", out],
        "eval rg": ["eval", "rg", "--verdicts", v, "--label", "x", "--out", out],
        "report": ["report", tmp_path / "ev", "--out", out],
        "generate": [
            "generate",
            "--data",
            rows,
            "--out",
            out,
            "-m",
            "m",
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--max-retries",
            "0",
            "--timeout",
            "5",
        ],
        "judge": [
            "judge",
            "--responses",
            rows,
            "--out",
            out,
            "-m",
            "m",
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--max-retries",
            "0",
            "--timeout",
            "5",
        ],
    }[case]
    resumable = case in ("generate", "judge")
    # the resumable file gets room for one row, so the second append fills the disk part-way
    res = run(args, tmp_path, full_disk=(full, 700), extra={"MIXFT_FAULT_FULL_NAME": out.name} if resumable else None)
    assert res.returncode == 3, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on device writing {out}: ") and "it needs" in last, last
    _no_traceback(res.stderr)
    if resumable:
        assert "complete row(s) kept" in last and not out.read_text().endswith("\n")  # a torn last line
        manifest = json.loads((full / "out.jsonl.manifest.json").read_text())
        assert manifest["summary"]["stopped"] == "no space left on device"
        again = run(args, tmp_path)  # space freed: the same command finishes the job, torn line cut
        assert again.returncode == 1 and "item(s) failed" in again.stderr  # nothing listens on port 9
        assert sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) == ["q0", "q1", "q2"]
    else:
        assert not out.exists()
    assert [p for p in full.iterdir() if not p.name.endswith((".jsonl", ".manifest.json"))] == []


# ------------------------------------------------------------------ 8. secrets


def test_credentials_never_reach_a_file_or_a_log(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "context": "c", "question": "q"}) + "\n" for i in range(2)))
    out = tmp_path / "gen.jsonl"
    with silent_endpoint() as url:
        secret_url = url.replace("http://", "http://alice:hunter2pw@")
        proc = start(
            [
                "generate",
                "--data",
                data,
                "--out",
                out,
                "-m",
                "m",
                "--backend",
                "openai",
                "--base-url",
                secret_url,
                "--timeout",
                "120",
                "--max-retries",
                "0",
            ],
            tmp_path,
            extra={"OPENAI_API_KEY": "sk-live-0123456789"},
        )
        wait_until(lambda: (tmp_path / "gen.jsonl.manifest.json").exists(), proc=proc, what="the manifest")
        from mixtral_ft.util.lock import lock_path

        lock_text = lock_path(out).read_text()
        rc, so, se = stop(proc, signal.SIGINT, timeout=30)
    assert rc == 130
    seen = lock_text + so + se + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert "hunter2pw" not in seen and "sk-live-0123456789" not in seen
    m = json.loads((tmp_path / "gen.jsonl.manifest.json").read_text())
    assert "http://***@127.0.0.1" in " ".join(m["command"]) and m["backend"]["base_url"].startswith("http://***@")


def test_a_key_in_a_url_query_or_in_set_is_refused_with_advice(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"id": "a", "context": "c", "question": "q"}) + "\n")
    res = run(
        [
            "generate",
            "--data",
            data,
            "--out",
            tmp_path / "o.jsonl",
            "-m",
            "m",
            "--backend",
            "openai",
            "--base-url",
            "https://api.example.com/v1?api_key=sk-query-secret",
        ],
        tmp_path,
    )
    assert res.returncode == 2 and "sk-query-secret" not in res.stderr
    assert "put it in an environment variable and name it with --api-key-env" in res.stderr
    for setting, env in (
        ("comet_api_key=abc123secret", "COMET_API_KEY"),
        ("mlflow_tracking_uri=http://bob:abc123secret@mlflow:5000", "MLFLOW_TRACKING_PASSWORD"),
    ):
        res = run(
            [
                "config",
                "render",
                "rg",
                "--data",
                tmp_path,
                "--profile",
                "cpu",
                "--set",
                setting,
                "--out",
                tmp_path / "cfg.yml",
            ],
            tmp_path,
        )
        assert res.returncode == 2 and env in res.stderr and "abc123secret" not in res.stderr
        assert not (tmp_path / "cfg.yml").exists()


# ------------------------------------------------------------------ 9. ids are data


def test_ids_with_control_characters_are_refused_everywhere(tmp_path):
    bad = "q1\ninjected: line"
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"id": bad, "question": "q", "context": "c", "answer": "a"})
        + "\n"
        + json.dumps({"id": "ok", "question": "q2", "context": "c", "answer": "a"})
        + "\n"
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "a\tb", "context": "c", "question": "q", "response": "r"}) + "\n")
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_text(json.dumps({"id": "x\u202eevil", "hallucinated": True}) + "\n")
    for args, shown in (
        (["prepare", "rg", qa, "--out", tmp_path / "p"], '"q1\\ninjected: line"'),
        (["judge", "--responses", rows, "--out", tmp_path / "j.jsonl", "-m", "m"], '"a\\tb"'),
        (["eval", "rg", "--verdicts", verdicts, "--label", "x", "--out", tmp_path / "e"], '"x\\u202eevil"'),
    ):
        res = run(args, tmp_path)
        assert res.returncode == 2, res.stderr
        assert "an id may not contain control characters" in res.stderr and shown in res.stderr, res.stderr
        assert "\ninjected" not in res.stderr and "\u202e" not in res.stderr  # never printed raw


def test_ids_that_look_like_paths_or_markup_are_just_data(tmp_path):
    ids = ["../../etc/passwd", "a/b", "<script>alert(1)</script>", "x & y | z", "..", "/abs/path", "C:\\x", "é ü"]
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "".join(
            json.dumps({"id": i, "question": f"q{n}", "context": "c", "answer": "a"}) + "\n" for n, i in enumerate(ids)
        )
    )
    res = run(["prepare", "rg", qa, "--out", tmp_path / "p", "--test-size", "2"], tmp_path)
    assert res.returncode == 0, res.stderr
    written = [
        json.loads(x)["id"]
        for f in ("train.jsonl", "test.jsonl")
        for x in (tmp_path / "p" / f).read_text().splitlines()
    ]
    assert sorted(written) == sorted(ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "qa.jsonl"]  # no file named after an id
    # the report escapes the text it shows (labels, names): Markdown-escaped in report.md (`<` and `|`),
    # so the HTML rendered from it shows the text
    v = _verdicts(tmp_path / "v.jsonl")
    label = "<script>alert(1)</script> | y"
    assert run(["eval", "rg", "--verdicts", v, "--label", label, "--out", tmp_path / "ev"], tmp_path).returncode == 0
    assert run(["report", tmp_path / "ev", "--out", tmp_path / "r"], tmp_path).returncode == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; | y" in html
    assert "\\<script>alert(1)\\</script> \\| y" in (tmp_path / "r" / "report.md").read_text()
