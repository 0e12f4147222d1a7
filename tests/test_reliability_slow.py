"""Issue 13, slow tier: real Axolotl on the tiny Mixtral through every training-run state, and
`generate`/`judge` with the tiny model killed, resumed, and re-run over changed inputs.

Every step is a real `mixft` process (``python -m mixtral_ft.cli.main``) stopped by a real signal.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from mixtral_ft.infer.rows import row_input_sha256
from mixtral_ft.util.hashing import sha256_json
from support.reliability_helpers import (
    alive,
    descendants,
    fill,
    kill,
    lock_held,
    mount_tmpfs,
    run,
    start,
    stop,
    unmount,
    wait_until,
)

pytestmark = pytest.mark.slow


def _log_has(run_dir: Path, text: str) -> bool:
    log = run_dir / "train.log"
    return log.exists() and text in log.read_text(errors="replace")


def _axolotl_children(proc) -> list[int]:
    return [pid for pid, cmd in descendants(proc.pid) if "axolotl.cli.train" in cmd]


def _attempts(run_dir: Path) -> list[tuple[str, str | None]]:
    m = json.loads((run_dir / "manifest.json").read_text())
    return [(a["action"], a["outcome"]) for a in m["attempts"]]


def test_training_run_states_with_real_axolotl(tiny_mixtral_dir, rg_data_dir, tmp_path):
    """new -> interrupted before any checkpoint (Ctrl-C) -> restarted by --resume -> killed -9 after
    a checkpoint (resumable) -> continued -> finished -> --resume says finished, trains nothing.
    Between steps, a plain `train` on the run refuses with the way on; a second `train` on a
    running run refuses with its pid; no Axolotl process outlives the `mixft` that started it."""
    run_dir = tmp_path / "run"
    base = [
        "train",
        "rg",
        "--data",
        rg_data_dir,
        "--profile",
        "cpu",
        "--base-model",
        tiny_mixtral_dir,
        "--run-dir",
        run_dir,
    ]

    # 1. a new run, stopped with Ctrl-C while Axolotl loads (before any checkpoint)
    first = start(base, tmp_path)
    wait_until(lambda: lock_held(run_dir), proc=first, what="the run directory's lock")
    second = run(base, tmp_path)  # two writers: the second refuses at once, naming the first
    assert second.returncode == 75 and f"in use by pid {first.pid}" in second.stderr, second.stderr
    wait_until(lambda: _log_has(run_dir, "Pre-saving"), proc=first, what="Axolotl to load the model")
    children = _axolotl_children(first)
    assert children, "Axolotl runs as a child of mixft"
    rc, _, err = stop(first, signal.SIGINT)
    assert rc == 130, err[-3000:]
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"interrupted (SIGINT): run {run_dir} kept, no checkpoint saved yet; restart it with: mixft train rg"
        )
    )
    assert err.strip().splitlines()[-1].endswith(f"--run-dir {run_dir} --resume")
    wait_until(lambda: not alive(children), timeout=30, what="Axolotl to exit")
    assert _attempts(run_dir) == [("start", "interrupted by SIGINT")]

    # 2. a plain `train` on it refuses and names --resume (it used to be a dead end)
    res = run(base, tmp_path)
    assert res.returncode == 2 and "stopped before its first checkpoint" in res.stderr
    assert "use --resume to restart it from step 0" in res.stderr

    # 3. --resume restarts it from step 0; kill -9 mixft once a checkpoint is saved
    resumed = start([*base, "--resume"], tmp_path)
    wait_until(
        lambda: (run_dir / "output" / "checkpoint-2" / "trainer_state.json").exists(), proc=resumed, what="checkpoint-2"
    )
    children = _axolotl_children(resumed)
    kill(resumed)
    wait_until(lambda: not alive(children), timeout=30, what="Axolotl to die with mixft (PR_SET_PDEATHSIG)")
    assert _attempts(run_dir)[1] == ("restart", None)  # killed -9: nothing could record the end

    # 4. resumable: a plain `train` refuses, --resume continues from the newest checkpoint
    res = run(base, tmp_path)
    assert res.returncode == 2 and "use --resume to continue it" in res.stderr
    res = run([*base, "--resume"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "steps: 4" in res.stdout
    state = json.loads((run_dir / "output" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 == state["max_steps"]
    action, outcome = _attempts(run_dir)[2]
    assert (action, outcome) == ("continue", "finished")

    # 5. finished: --resume says so and trains nothing (it used to add a step each time); train refuses
    res = run([*base, "--resume"], tmp_path)
    assert res.returncode == 0 and "is already finished: step 4" in res.stdout and "nothing to do" in res.stdout
    assert len(_attempts(run_dir)) == 3
    res = run(base, tmp_path)
    assert res.returncode == 2 and "exists and finished (step 4 of 4" in res.stderr


def _rows(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "context": f"The museum opens at {i} am.",
                    "question": f"When does museum {i} open?",
                    "answer": f"{i} am",
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def _ids(path: Path) -> list[str]:
    return sorted(json.loads(line)["id"] for line in path.read_text().splitlines())


def _check_manifest_describes_the_file(out: Path, data: Path, keys) -> dict:
    """The manifest's output entry holds the SHA-256 of the input rows the file's rows were made from."""
    m = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    rows = {r["id"]: r for r in map(json.loads, data.read_text().splitlines())}
    made = sorted([r["id"], r["input_sha256"]] for r in map(json.loads, out.read_text().splitlines()))
    assert all(sha == row_input_sha256(rows[i], keys) for i, sha in made)
    entry = m["outputs"][out.name]
    assert entry["input_rows_sha256"] == sha256_json(made) and entry["rows_for_input"] == len(made)
    return m


def test_generate_and_judge_stopped_resumed_and_rerun_over_changed_inputs(tiny_mixtral_dir, tmp_path):
    data = _rows(tmp_path / "test.jsonl", 8)
    gens = tmp_path / "gens.jsonl"
    gen = [
        "generate",
        "--model",
        tiny_mixtral_dir,
        "--data",
        data,
        "--out",
        gens,
        "--max-new-tokens",
        "4",
        "--batch-size",
        "1",
    ]
    # SIGTERM part-way: 143, the note says how many rows are kept, the manifest says so too
    proc = start(gen, tmp_path)
    wait_until(lambda: gens.exists() and len(gens.read_text().splitlines()) >= 2, proc=proc, what="two rows")
    rc, _, err = stop(proc, signal.SIGTERM)
    assert rc == 143, err[-2000:]
    kept = len(gens.read_text().splitlines())
    assert f"interrupted (SIGTERM): {kept} of 8 row(s) done in {gens}" in err
    m = json.loads((tmp_path / "gens.jsonl.manifest.json").read_text())
    assert m["summary"]["stopped"] == "SIGTERM" and m["summary"]["done"] == kept == m["outputs"]["gens.jsonl"]["rows"]
    # resumed: every id once
    res = run(gen, tmp_path)
    assert res.returncode == 0 and f"resumed: {kept} of 8 rows were already done" in res.stderr, res.stderr[-2000:]
    assert _ids(gens) == [f"q{i}" for i in range(8)]
    # one input row changed: exactly that row is generated again, and the manifest says what the file holds
    rows = data.read_text().splitlines()
    rows[3] = json.dumps({**json.loads(rows[3]), "question": "When does the museum close?"})
    data.write_text("\n".join(rows) + "\n")
    res = run(gen, tmp_path)
    assert (
        res.returncode == 0
        and "resumed: 7 of 8 rows were already done, 1 row(s) redone because their input changed" in res.stderr
    ), res.stderr[-2000:]
    assert _ids(gens) == [f"q{i}" for i in range(8)]
    m = _check_manifest_describes_the_file(gens, data, None)
    assert m["summary"]["changed"] == 1 and m["inputs"][0]["sha256"] == sha256_file(data)

    # judge the answers; then one response changes: only its verdict is redone (latencies do not count)
    verdicts = tmp_path / "verdicts.jsonl"
    jud = [
        "judge",
        "--model",
        tiny_mixtral_dir,
        "--responses",
        gens,
        "--out",
        verdicts,
        "--max-new-tokens",
        "4",
        "--batch-size",
        "4",
        "--no-score",
    ]
    assert run(jud, tmp_path).returncode == 0
    rows = [json.loads(line) for line in gens.read_text().splitlines()]
    rows[0]["response"] = "It opens at noon."
    for r in rows[1:]:
        r["latency_s"] = 99.0  # not something a verdict is made from
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run(jud, tmp_path)
    assert res.returncode == 0 and "1 row(s) redone because their input changed" in res.stderr, res.stderr[-2000:]
    keys = ("id", "context", "question", "response", "source", "model", "group")
    _check_manifest_describes_the_file(verdicts, gens, keys)


def sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generate_on_a_real_full_filesystem(tiny_mixtral_dir, tmp_path):
    """Rows fill a small tmpfs part-way: one line naming the file and the space needed, exit 3,
    only complete rows kept; with space again the same command finishes, every id once."""
    mnt = tmp_path / "small"
    if not mount_tmpfs(mnt, "256k"):
        pytest.skip(
            "cannot mount a tmpfs here (not root, or mounts not permitted); "
            "tests/test_reliability.py injects the same failure at the write layer"
        )
    try:
        data = _rows(tmp_path / "test.jsonl", 24)
        out = mnt / "gens.jsonl"
        fill(mnt, 12 * 1024)  # room for the manifest and a few rows (tmpfs counts 4 KiB pages)
        gen = [
            "generate",
            "--model",
            tiny_mixtral_dir,
            "--data",
            data,
            "--out",
            out,
            "--max-new-tokens",
            "48",
            "--batch-size",
            "4",
        ]
        res = run(gen, tmp_path)
        assert res.returncode == 3, res.stderr[-2000:]
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: no space left on device writing {out}: ") and "it needs about" in last
        assert "Traceback" not in res.stderr
        (mnt / "filler").unlink()
        res = run(gen, tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        assert _ids(out) == sorted(f"q{i}" for i in range(24))
        assert sorted(p.name for p in mnt.iterdir()) == ["gens.jsonl", "gens.jsonl.manifest.json"]
    finally:
        shutil.rmtree(mnt, ignore_errors=True)
        unmount(mnt)
