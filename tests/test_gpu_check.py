"""`make gpu-check` on CPU: the wheelhouse and its size check, argument handling, the JUnit reader,
the JSON summary's schema, and (slow) the whole script run end to end with the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpucheck import (
    LIMIT_BYTES,
    MIB,
    SUMMARY_SCHEMA,
    WHEEL_PACKAGES,
    bench_problems,
    gpu_test_files,
    parse_junit,
    pip_download_command,
    travel_bytes,
    validate_summary,
    wheel_name,
    wheelhouse_report,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"

# Sizes measured on 2026-12-01 (pip download for cp312 manylinux x86_64): docs/design/gpu-check.md.
MEASURED = {
    "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl": 43_139_553,
    "transformers-5.16.1-py3-none-any.whl": 12_080_592,
    "peft-0.20.0-py3-none-any.whl": 775_777,
}


def _script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_pip_download_fetches_binary_wheels_for_the_machine_without_dependencies(tmp_path):
    cmd = pip_download_command(tmp_path, {"bitsandbytes": "0.50.2", "peft": "0.20.0"}, python="py")
    assert cmd[:4] == ["py", "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(cmd)
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and cmd[cmd.index("--implementation") + 1] == "cp"
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert "manylinux_2_28_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert cmd[-3:] == [str(tmp_path), "bitsandbytes==0.50.2", "peft==0.20.0"]


def test_wheel_versions_are_axolotls_pins():
    """The GPU machine must run the bitsandbytes, peft and transformers that Axolotl 0.19.0 (and the CPU tests) use."""
    from importlib import metadata

    from bench.gpucheck import pinned_versions

    try:
        requires = metadata.requires("axolotl") or []
    except metadata.PackageNotFoundError:
        pytest.skip("axolotl not installed")
    pins = pinned_versions()
    for name in ("bitsandbytes", "peft", "transformers"):
        assert any(r.split(";")[0].strip() == f"{name}=={pins[name]}" for r in requires), name
    assert [n for n, _ in WHEEL_PACKAGES][:3] == ["bitsandbytes", "peft", "transformers"]


def test_the_measured_wheelhouse_fits_and_axolotl_would_not():
    report = wheelhouse_report(MEASURED, tree_bytes=1_500_000, expected=["bitsandbytes", "peft", "transformers"])
    assert report["fits"] and report["problems"] == []
    assert report["wheels"][0]["file"].startswith("bitsandbytes") and report["wheels"][0]["mib"] == 41.14
    assert 8 < report["margin_mib"] < 10
    # Axolotl 0.19.0 and the 51 other wheels a CPU training run imports that the image lacks: 54.4 MiB.
    with_axolotl = dict(MEASURED, **{"axolotl-and-its-imports.whl": int(54.4 * MIB)})
    over = wheelhouse_report(with_axolotl, tree_bytes=1_500_000)
    assert not over["fits"] and over["total_mib"] > 100
    assert over["problems"] == [
        (
            f"wheels {over['wheels_mib']:.1f} MiB + working tree 1.4 MiB = "
            f"{over['total_mib']:.1f} MiB, over the 64 MiB a device call carries"
        )
    ]


def test_wheelhouse_refuses_two_versions_and_names_a_missing_wheel():
    report = wheelhouse_report(
        {
            "peft-0.20.0-py3-none-any.whl": 10,
            "peft-0.19.1-py3-none-any.whl": 10,
            "jsonschema_specifications-2025.9.1-py3-none-any.whl": 1,
        },
        0,
        expected=["peft", "bitsandbytes", "jsonschema-specifications"],
    )
    assert report["problems"] == ["peft: more than one wheel; keep one version", "bitsandbytes: no wheel"]
    assert not report["fits"]
    assert wheel_name("rpds_py-2026.9.1-cp312-cp312-manylinux_2_17_x86_64.whl") == "rpds-py"
    assert wheelhouse_report({}, LIMIT_BYTES + 1)["fits"] is False


def test_travel_bytes_counts_what_a_device_call_sends(tmp_path):
    def run(*a):
        return subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    run("init", "-q")
    (tmp_path / ".gitignore").write_text(".whl/\n")
    (tmp_path / "tracked.txt").write_text("x" * 100)
    run("add", "tracked.txt", ".gitignore")
    (tmp_path / "untracked.txt").write_text("y" * 50)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "big.whl").write_bytes(b"z" * 10_000)  # ignored: it travels only when carried
    assert travel_bytes(tmp_path) == 100 + 50 + len(".whl/\n")


def test_only_modules_with_gpu_tests_are_collected():
    files = [p.name for p in gpu_test_files(REPO / "tests")]
    assert "test_gpu.py" in files and "test_prepare_rg.py" not in files


def test_junit_counts_and_reasons_from_a_real_pytest_run(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_ok():\n    assert True\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "def test_skip():\n    pytest.skip('no CUDA device')\n"
        "def test_skip_too():\n    pytest.skip('no CUDA device')\n"
    )
    xml = tmp_path / "out.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml}",
            str(tmp_path / "test_sample.py"),
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    r = parse_junit(xml)
    assert (r["tests"], r["passed"], r["failed"], r["skipped"], r["errors"]) == (4, 1, 1, 2, 0)
    assert r["skipped_reasons"] == {"no CUDA device": 2}
    assert r["failures"][0].startswith("test_sample::test_bad: AssertionError: one is not two")


def _summary(**kw) -> dict:
    s = {
        "schema": SUMMARY_SCHEMA,
        "started_at": "t0",
        "ended_at": "t1",
        "wall_s": 1.0,
        "environment": {},
        "tests": {"passed": 1, "failed": 0, "errors": 0, "skipped": 3, "exit_status": 0},
        "bench": {
            "rows": [
                {
                    "case": "rg/a100-80gb",
                    "layers": 1,
                    "ok": True,
                    "peak_gib": 9.0,
                    "micro_batch_size": 4,
                    "sequence_len": 4096,
                }
            ],
            "fits": {},
        },
        "ok": True,
        "problems": [],
        "stages": {"tests": {"status": "ok"}, "bench": {"status": "ok"}},
    }
    s.update(kw)
    return s


def test_summary_schema():
    assert validate_summary(_summary()) == []
    bad = _summary(ok="yes", stages={"tests": {"status": "done"}})
    del bad["environment"]
    bad["bench"]["rows"][0].pop("peak_gib")
    assert validate_summary(bad) == [
        "environment: missing",
        "ok: expected <class 'bool'>, got str",
        "bench.rows.0.peak_gib: missing",
        "stages.tests: status must be ok, failed, skipped or running",
    ]
    assert validate_summary(_summary(tests=None, bench=None)) == []  # stages that were skipped


def test_bench_problems_name_failures_unquantized_experts_and_cards_too_small():
    rows = [
        {"case": "tc/a100-40gb", "layers": 1, "ok": False, "error": "CUDA out of memory: tried to allocate"},
        {
            "case": "rg/a100-80gb",
            "layers": 2,
            "ok": True,
            "quantization": {"expert_tensors": 4, "expert_tensors_4bit": 0},
        },
    ]
    fits = {
        "rg/a100-80gb": {"peak_reserved_gib": {"at_layers": 32, "value_at": 46.0}},
        "tc/a100-40gb": {"peak_gib": {"at_layers": 32, "value_at": 41.3}},
    }
    assert bench_problems({"rows": rows, "fits": fits}) == [
        "tc/a100-40gb at 1 layer(s): CUDA out of memory: tried to allocate",
        "rg/a100-80gb at 2 layer(s): 0 of 4 expert tensors in 4-bit",
        "tc/a100-40gb: peak read at 32 layers is 41.3 GiB, over the 39.4 GiB of the card the profile is sized for",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--out", "OUT"], "no CUDA device; this check is for a GPU machine"),
        (["run", "--allow-cpu", "--out", "OUT"], "--width full needs a CUDA device"),
        (["run", "--allow-cpu", "--width", "tiny", "--cases", "rg/a100", "--out", "OUT"], "Unknown profile 'a100'"),
        (["run", "--cases", "xx/a100-80gb", "--out", "OUT"], "expected TASK/PROFILE such as rg/a100-80gb"),
        (["run", "--layers", "0", "--out", "OUT"], "layer counts must be positive integers"),
        (["run", "--allow-cpu", "--width", "tiny", "--steps", "0", "--out", "OUT"], "--steps must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(args, message, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    proc = _script(*[str(out) if a == "OUT" else a for a in args])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not out.exists()


def test_wheelhouse_check_only_reports_what_is_missing(tmp_path):
    proc = _script("wheelhouse", "--dir", str(tmp_path), "--check-only")
    assert proc.returncode == 1
    assert "error: bitsandbytes: no wheel" in proc.stderr
    report = json.loads((tmp_path / "wheelhouse.json").read_text())
    assert report["fits"] is False and report["pins"]["bitsandbytes"] == "0.50.2"


@pytest.mark.slow
def test_the_whole_check_runs_on_cpu_with_the_tiny_model(tmp_path):
    """Every stage of `make gpu-check`, CPU-sized: the gpu tier (it skips here), then the step benchmark on the
    tiny Mixtral at 1 and 2 layers through mixft's 4-bit plan and peft, then the summary."""
    out, work = tmp_path / "out", tmp_path / "work"
    proc = _script(
        "run",
        "--allow-cpu",
        "--width",
        "tiny",
        "--layers",
        "1,2",
        "--cases",
        "rg/a100-80gb",
        "--set",
        "sequence_len=32",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--out",
        str(out),
        "--work",
        str(work),
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert validate_summary(summary) == []
    assert summary["ok"] is True and summary["problems"] == []
    assert {k: v["status"] for k, v in summary["stages"].items()} == {"tests": "ok", "bench": "ok"}
    tests = summary["tests"]
    assert tests["failed"] == tests["errors"] == 0 and tests["skipped"] == tests["tests"] >= 4
    assert "no CUDA device" in tests["skipped_reasons"]
    rows = summary["bench"]["rows"]
    assert [(r["case"], r["layers"], r["ok"]) for r in rows] == [("rg/a100-80gb", 1, True), ("rg/a100-80gb", 2, True)]
    for r in rows:
        assert r["quantization"] == {
            "expert_tensors": 2 * r["layers"],
            "expert_tensors_4bit": 2 * r["layers"],
            "linear_4bit": 4 * r["layers"],
        }
        assert (r["micro_batch_size"], r["sequence_len"]) == (4, 32) and r["optimizer"] == "adamw_bnb_8bit"
        # the GPU profiles ask for non-reentrant checkpointing (docs/training.md, "Router auxiliary loss")
        assert r["gradient_checkpointing_kwargs"] == {"use_reentrant": False} and r["step_s"] > 0
    assert summary["bench"]["fits"]["rg/a100-80gb"]["peak_gib"]["points"] == 2
    assert summary["environment"]["packages"]["bitsandbytes"] == "0.50.2"
    assert sorted(p.name for p in out.iterdir()) == ["bench.md", "gpu-tests.log", "gpu-tests.xml", "gpu_check.json"]
    assert not (work / "models").exists() or not any((work / "models").iterdir())
