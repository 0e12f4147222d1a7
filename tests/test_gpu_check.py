"""`make gpu-check` on CPU: the wheelhouse (what travels, slimming, packing into parts, the installer
against a local folder), the arguments, the summary and its tables; (slow) the real wheelhouse from
PyPI installed over a stand-in for the machine's image, and the whole check run there on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench.gpucheck import (
    GPU_TESTS_DESELECT,
    PART_ORDER,
    SUMMARY_SCHEMA,
    expert_lora_comparison,
    parse_junit,
    plan_comparison,
    render_markdown,
    stepbench_problems,
    train_problems,
    validate_summary,
)
from bench.wheelhouse import (
    CARRY,
    IMAGE_PACKAGES,
    LIMIT_BYTES,
    MIB,
    check_site,
    device_calls,
    install_part,
    pack_parts,
    pip_build_command,
    pip_download_command,
    slim_rules,
    slim_wheel,
    top_level_names,
    travel_bytes,
    wheel_name,
    wheelhouse_problems,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"

# The wheelhouse as `make gpu-wheelhouse` built it on 2026-12-07 (pip download for cp312 manylinux
# x86_64; bitsandbytes and wandb slimmed), and the two slimmed wheels whole: docs/design/gpu-check.md.
MEASURED = {
    "transformers-5.20.1-py3-none-any.whl": 12844669,
    "pycountry-26.2.16-py3-none-any.whl": 8044600,
    "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl": 7123937,
    "mistral_common-1.12.0-py3-none-any.whl": 6580267,
    "zstandard-0.22.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": 5426393,
    "torchao-0.18.0-cp310-abi3-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl": 3372585,
    "axolotl-0.21.0-py3-none-any.whl": 2139997,
    "pydantic_core-2.46.5-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": 2066284,
    "kernels-0.17.2-cp38-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": 1896075,
    "wandb-0.31.0-py3-none-manylinux_2_28_x86_64.whl": 1239685,
    "trl-1.14.1-py3-none-any.whl": 925516,
    "peft-0.21.2-py3-none-any.whl": 835427,
    "the 23 other wheels": 2_299_948,
}
WHOLE = {"bitsandbytes": 43139553, "wandb": 20337507}
TREE = 3_305_498  # the working tree that travels, the same day


def _script(*args: str, timeout: int = 300, python: str = sys.executable, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def _wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A real, installable pure-Python wheel holding ``files``."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = directory / f"{dist}-py3-none-any.whl"
    meta = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    members = {**files, **meta}
    record = "".join(f"{m},,\n" for m in members) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
        z.writestr(f"{dist}.dist-info/RECORD", record)
    return path


def test_pip_commands_fetch_binary_wheels_for_the_machine_and_build_the_source_only_ones(tmp_path):
    cmd = pip_download_command(tmp_path, {"bitsandbytes": "0.50.2", "peft": "0.21.2"}, python="py")
    assert cmd[:4] == ["py", "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(cmd)
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and cmd[cmd.index("--implementation") + 1] == "cp"
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert "manylinux_2_28_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert cmd[-3:] == [str(tmp_path), "bitsandbytes==0.50.2", "peft==0.21.2"]
    build = pip_build_command(tmp_path, {"axolotl-contribs-lgpl": "0.0.7"}, python="py")
    assert build[:4] == ["py", "-m", "pip", "wheel"] and "--no-deps" in build
    assert build[-1] == "axolotl-contribs-lgpl==0.0.7"


def test_what_travels_is_at_axolotls_pins_and_the_image_keeps_its_own_elsewhere():
    """The machine runs the bitsandbytes, transformers, peft, trl and datasets Axolotl 0.21.0 pins, as
    the CPU tests do; of the image's own packages only those whose version matters here are carried."""
    from importlib import metadata

    from bench.wheelhouse import pinned_versions

    pins = pinned_versions()
    requires = metadata.requires("axolotl") or []
    for name in ("bitsandbytes", "peft", "transformers", "trl", "datasets", "axolotl-contribs-lgpl"):
        assert any(r.split(";")[0].strip() == f"{name}=={pins[name]}" for r in requires), name
    carried = {c.name for c in CARRY}
    assert carried & IMAGE_PACKAGES == {"transformers", "peft", "fsspec", "typer", "click"}
    assert {c.name for c in CARRY if c.build} == {"axolotl-contribs-lgpl", "axolotl-contribs-mit"}
    assert "torch" not in carried and "flash-attn" not in carried


def test_slimming_keeps_the_cuda_13_kernels_and_drops_what_the_machine_never_loads(tmp_path):
    bnb, wandb = slim_rules()
    keep = ["libbitsandbytes_cuda130.so", "libbitsandbytes_cuda132.so", "libbitsandbytes_cpu.so", "functional.py"]
    drop = ["libbitsandbytes_cuda128.so", "libbitsandbytes_cuda118.so", "libbitsandbytes_rocm72.so"]
    drop += ["libbitsandbytes_xpu2026.so"]
    assert [bnb.drops(f"bitsandbytes/{f}") for f in keep] == [False] * 4
    assert [bnb.drops(f"bitsandbytes/{f}") for f in drop] == [True] * 4
    assert slim_rules(("13", "128"))[0].drops("bitsandbytes/libbitsandbytes_cuda128.so") is False
    assert wandb.drops("wandb/bin/wandb-core") and not wandb.drops("wandb/__init__.py")

    src = _wheel(
        tmp_path,
        "bitsandbytes",
        "0.50.2",
        {
            "bitsandbytes/__init__.py": b"",
            "bitsandbytes/libbitsandbytes_cuda130.so": b"x" * 100,
            "bitsandbytes/libbitsandbytes_cuda128.so": b"y" * 5000,
        },
    )
    (tmp_path / "out").mkdir()
    done = slim_wheel(src, tmp_path / "out" / src.name, bnb)
    assert done["dropped"] == ["bitsandbytes/libbitsandbytes_cuda128.so"] and done["wheel"] == src.name
    with zipfile.ZipFile(tmp_path / "out" / src.name) as z:
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
        assert "cuda128" not in record and "cuda130" in record
        assert "bitsandbytes/libbitsandbytes_cuda128.so" not in z.namelist()
    assert top_level_names(tmp_path / "out" / src.name) == {"bitsandbytes"}


def test_parts_keep_one_top_level_package_together_and_refuse_what_cannot_fit():
    sizes = {"a.whl": 50, "axolotl.whl": 30, "contribs.whl": 25, "b.whl": 10}
    tops = {"a.whl": {"a"}, "axolotl.whl": {"axolotl"}, "contribs.whl": {"axolotl"}, "b.whl": {"b"}}
    assert pack_parts(sizes, tops, 60) == [["axolotl.whl", "contribs.whl"], ["a.whl", "b.whl"]]
    assert pack_parts(sizes, tops, 200) == [["a.whl", "axolotl.whl", "contribs.whl", "b.whl"]]
    with pytest.raises(ValueError, match="axolotl.whl, contribs.whl: 0.0 MiB, more than"):
        pack_parts(sizes, tops, 54)


def test_the_measured_wheelhouse_travels_in_one_call_and_whole_wheels_would_take_two():
    limit = LIMIT_BYTES - TREE
    tops = {f: {wheel_name(f)} for f in MEASURED}
    assert len(pack_parts(MEASURED, tops, limit)) == 1
    assert 8 < (limit - sum(MEASURED.values())) / MIB < 9  # the margin left for the working tree to grow
    whole = dict(MEASURED)
    for f in list(whole):
        whole[f] = WHOLE.get(wheel_name(f), whole[f])
    assert len(pack_parts(whole, tops, limit)) == 2  # bitsandbytes alone is 41.1 MiB


def test_device_calls_go_one_per_part_and_the_last_runs_the_check():
    one = device_calls(1)
    assert one == [
        {
            "command": "python3 scripts/gpu_check.py install --part 1 && PYTHONUNBUFFERED=1 "
            "python3 scripts/gpu_check.py run --out $OUT",
            "carry": [".whl/part1"],
            "timeout_s": 600,
        }
    ]
    two = device_calls(2)
    assert [c["carry"] for c in two] == [[".whl/part1"], [".whl/part2"]]
    assert two[0]["command"] == "python3 scripts/gpu_check.py install --part 1" and "run --out" in two[1]["command"]


def test_wheelhouse_problems_name_a_missing_or_doubled_wheel_and_a_part_over_the_budget():
    manifest = {
        "tree_bytes": 4 * MIB,
        "limit_bytes": LIMIT_BYTES,
        "parts": [
            {"part": 1, "bytes": 61 * MIB, "wheels": [{"file": "peft-0.21.2-py3-none-any.whl"}]},
            {"part": 2, "bytes": MIB, "wheels": [{"file": "peft-0.20.0-py3-none-any.whl"}]},
        ],
    }
    assert wheelhouse_problems(manifest, ["peft", "bitsandbytes"]) == [
        "peft: more than one wheel; keep one version",
        "bitsandbytes: no wheel",
        "part 1: wheels 61.0 MiB + working tree 4.0 MiB = 65.0 MiB, over the 64 MiB a device call carries",
    ]
    assert wheel_name("rpds_py-2026.9.1-cp312-cp312-manylinux_2_17_x86_64.whl") == "rpds-py"


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


def _local_wheelhouse(tmp_path: Path) -> Path:
    """Two parts of real wheels, laid out and described as build_wheelhouse lays them out."""
    from bench.wheelhouse import MANIFEST, sha256

    whl = tmp_path / ".whl"
    parts = []
    for n, (name, module) in enumerate((("alpha-pkg", "alpha_mod"), ("beta-pkg", "beta_mod")), start=1):
        (whl / f"part{n}").mkdir(parents=True)
        w = _wheel(whl / f"part{n}", name, "1.0", {f"{module}.py": f"VALUE = {n}\n".encode()})
        parts.append(
            {"part": n, "bytes": w.stat().st_size, "wheels": [{"file": w.name, "bytes": 1, "sha256": sha256(w)}]}
        )
    manifest = {"schema": "mixft-gpu-wheelhouse/v1", "tree_bytes": 0, "limit_bytes": LIMIT_BYTES, "parts": parts}
    for n in (1, 2):
        (whl / f"part{n}" / MANIFEST).write_text(json.dumps(dict(manifest, part=n)))
    return whl


def test_parts_install_into_their_own_folders_once_and_the_check_names_a_missing_part(tmp_path):
    whl, site = _local_wheelhouse(tmp_path), tmp_path / ".gpu-site"
    first = install_part(whl / "part1", site, say=lambda m: None)
    assert first["installed"] is True and (site / "part1" / "alpha_mod.py").exists()
    dirs, problems = check_site(site)
    assert dirs == [site / "part1"]
    assert problems == [
        "part 2 of 2 is not installed on this machine (a fresh machine: an earlier call's install is gone once the "
        "machine is given back); run call 2 again: python3 scripts/gpu_check.py install --part 2 && "
        "PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py run --out $OUT with carry ['.whl/part2']"
    ]
    assert install_part(whl / "part1", site, say=lambda m: None)["installed"] is False  # idempotent
    assert install_part(whl / "part2", site, say=lambda m: None)["installed"] is True
    assert check_site(site) == ([site / "part1", site / "part2"], [])
    proc = subprocess.run(
        [sys.executable, "-c", "import alpha_mod, beta_mod; print(alpha_mod.VALUE + beta_mod.VALUE)"],
        env={"PYTHONPATH": f"{site / 'part1'}:{site / 'part2'}"},
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "3"
    wheel = next((whl / "part2").glob("*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    (site / "part2" / ".mixft-part.json").unlink()
    with pytest.raises(RuntimeError, match="not the wheel the manifest names"):
        install_part(whl / "part2", site, say=lambda m: None)


def test_install_script_says_which_carry_is_missing(tmp_path):
    proc = _script("install", "--part", "3", "--dir", str(tmp_path), "--site", str(tmp_path / "site"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f'error: {tmp_path}/part3: not here; name it in the call\'s carry ([".whl/part3"])'


def test_wheelhouse_check_only_without_a_wheelhouse(tmp_path):
    proc = _script("wheelhouse", "--dir", str(tmp_path), "--check-only")
    assert proc.returncode == 1 and "no wheelhouse; run without --check-only first" in proc.stderr


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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", "test_sample.py"],
        capture_output=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    r = parse_junit(xml)
    assert (r["tests"], r["passed"], r["failed"], r["skipped"], r["errors"]) == (4, 1, 1, 2, 0)
    assert r["skipped_reasons"] == {"no CUDA device": 2}
    assert r["failures"][0].startswith("test_sample::test_bad: AssertionError: one is not two")


def test_the_gpu_tier_deselects_only_what_the_parts_cover():
    names = [ln.split("(")[0].removeprefix("def ") for ln in (REPO / "tests" / "test_gpu.py").read_text().splitlines()]
    tests = [n for n in names if n.startswith("test_")]
    dropped = [n for n in tests if "trains_with_gpu_profile" in n or "full_width" in n]
    assert len(dropped) == 2 and len(tests) - len(dropped) == 3
    assert GPU_TESTS_DESELECT == "not trains_with_gpu_profile and not full_width"


# --- the summary: measured rows and plans as a CUDA run leaves them -----------------------------------


def _row(case: str, layers: int, load: float, after: float, peak: float, reserved: float, step: float) -> dict:
    return {
        "case": case,
        "profile": case,
        "layers": layers,
        "ok": True,
        "after_load_gib": load,
        "after_steps_gib": after,
        "peak_gib": peak,
        "peak_reserved_gib": reserved,
        "step_s": step,
        "token_slots_per_s": 16384 / step,
        "micro_batch_size": 4,
        "sequence_len": 4096,
        "quantization": {"expert_tensors": 2 * layers, "expert_tensors_4bit": 2 * layers, "linear_4bit": 4 * layers},
    }


def _plan(peak: float, reserved: float, weights: float = 1.0) -> dict:
    return {
        "allocated_peak_gib": peak,
        "reserved_peak_gib": reserved,
        "groups_gib": {"weights": weights, "state": 0.1, "transient": peak - weights - 0.1},
    }


def _bench() -> dict:
    from bench.membench import fits_for

    rows = [
        _row("rg/h100-80gb", 1, 1.2, 1.25, 11.0, 13.0, 0.5),
        _row("rg/h100-80gb", 2, 1.9, 1.95, 12.0, 14.0, 0.7),
        _row("rg/h100-80gb+expert-lora", 1, 1.2, 1.4, 14.5, 17.0, 0.9),
        _row("rg/h100-80gb+expert-lora", 2, 1.9, 2.2, 15.6, 18.0, 1.3),
    ]
    plans = {
        "rg/h100-80gb": {"1": _plan(11.4, 14.1), "2": _plan(12.2, 14.8), "32": _plan(37.2, 39.6)},
        "rg/h100-80gb+expert-lora": {"1": _plan(14.0, 17.4), "2": _plan(15.0, 18.2), "32": _plan(43.6, 46.6)},
    }
    return {"rows": rows, "fits": fits_for(rows), "plans": plans}


def test_plan_comparison_per_layer_count_and_read_at_32_layers():
    comparison = plan_comparison(_bench())
    first = comparison[0]
    assert (first["case"], first["layers"], first["measured_peak_gib"], first["planned_peak_gib"]) == (
        "rg/h100-80gb",
        1,
        11.0,
        11.4,
    )
    assert first["error_peak"] == pytest.approx(0.4 / 11.0, abs=1e-4)
    assert first["groups"]["weights"] == {"measured": 1.2, "planned": 1.0}
    assert first["groups"]["state"]["measured"] == pytest.approx(0.05)
    assert first["groups"]["transient"]["measured"] == pytest.approx(11.0 - 1.25)
    at32 = [c for c in comparison if c["layers"] == 32]
    assert [c["case"] for c in at32] == ["rg/h100-80gb", "rg/h100-80gb+expert-lora"]
    assert at32[0]["measured_peak_gib"] == pytest.approx(11.0 + 31 * 1.0) and at32[0]["planned_peak_gib"] == 37.2
    assert at32[0]["step_s_at"] == pytest.approx(0.5 + 31 * 0.2)
    experts = expert_lora_comparison(comparison)
    assert [(e["layers"], e["measured_delta_gib"], e["planned_delta_gib"]) for e in experts] == [
        (1, 3.5, 2.6),
        (2, 3.6, 2.8),
        (32, pytest.approx(6.6), pytest.approx(6.4)),
    ]


def test_stepbench_problems_name_failures_unquantized_experts_failed_plans_and_cards_too_small():
    bench = _bench()
    bench["rows"].append({"case": "tc/a100-40gb", "layers": 1, "ok": False, "error": "CUDA out of memory: x"})
    bench["rows"][1]["quantization"] = {"expert_tensors": 4, "expert_tensors_4bit": 0}
    bench["plans"]["rg/h100-80gb"]["2"] = {"error": "MixftError: no"}
    bench["fits"]["rg/a100-40gb"] = {"peak_reserved_gib": {"at_layers": 32, "value_at": 41.3}}
    assert stepbench_problems(bench) == [
        "stepbench: rg/h100-80gb at 2 layer(s): 0 of 4 expert tensors in 4-bit",
        "stepbench: tc/a100-40gb at 1 layer(s): CUDA out of memory: x",
        "stepbench: plan of rg/h100-80gb at 2 layers failed: MixftError: no",
        "stepbench: rg/a100-40gb: peak read at 32 layers is 41.3 GiB, over the 39.4 GiB of the card the profile is sized for",
    ]


def test_train_problems_on_cuda():
    row = {
        "exit_status": 0,
        "probe_summary": {"warnings": []},
        "probe_model": {"quantized_expert_tensors": 4, "unquantized_expert_tensors": 0},
        "lora_kernel_lines": ["Patched attention class with LoRA optims: MixtralAttention"],
        "mixft_held_cuda": False,
    }
    assert train_problems(row, "cuda") == []
    bad = dict(row, exit_status=1, error="boom", lora_kernel_lines=[], mixft_held_cuda=True)
    bad["probe_model"] = {"quantized_expert_tensors": 0, "unquantized_expert_tensors": 4}
    assert train_problems(bad, "cuda") == [
        "train: mixft train exited 1: boom",
        "train: 0 of 4 expert tensors quantized by quantize_moe_experts",
        "train: Axolotl's log does not say the LoRA kernels were patched in",
        "train: mixft's own process held a CUDA context while Axolotl trained (nvidia-smi)",
    ]


def _summary(**kw) -> dict:
    s = {
        "schema": SUMMARY_SCHEMA,
        "started_at": "t0",
        "ended_at": "t1",
        "wall_s": 1.0,
        "options": {},
        "site": {"dirs": []},
        "parts": {
            "env": {"status": "ok", "wall_s": 9.0, "result": {"device": {"name": "NVIDIA H100 80GB HBM3"}}},
            "train": {"status": "failed", "wall_s": 240.0, "error": "did not finish within 240 s", "result": {}},
            "stepbench": {"status": "ok", "wall_s": 200.0, "result": _bench()},
        },
        "ok": False,
        "problems": ["train: did not finish within 240 s"],
    }
    s.update(kw)
    return s


def test_summary_schema():
    assert validate_summary(_summary()) == []
    bad = _summary(ok="yes")
    del bad["site"]
    bad["parts"]["infer"] = {"status": "done"}
    bad["parts"]["tests"] = {"status": "failed"}
    bad["parts"]["other"] = {"status": "ok"}
    assert validate_summary(bad) == [
        "site: missing",
        "ok: expected <class 'bool'>, got str",
        "parts.infer: status must be one of ok, failed, skipped, running",
        "parts.tests: a failed part names its error",
        "parts.other: not a part of the check",
    ]


def test_markdown_has_a_row_per_part_the_benchmark_the_comparisons_and_the_problems():
    summary = _summary()
    summary["plan_comparison"] = plan_comparison(summary["parts"]["stepbench"]["result"])
    summary["expert_lora"] = expert_lora_comparison(summary["plan_comparison"])
    md = render_markdown(summary)
    assert md.startswith("# mixft gpu-check on NVIDIA H100 80GB HBM3: problems\n")
    assert "| train | (a) tiny Mixtral through mixft train --profile h100-80gb --probe (Axolotl) | failed | 240 |" in md
    assert "| rg/h100-80gb | 1 | 11.00 | 11.40 | +3.6% | 13.00 | 14.10 | +8.5% | 1.20 / 1.00 |" in md
    assert "| rg/h100-80gb+expert-lora | 32 (line) | 6.60 | 6.40 | -3.0% |" in md
    assert md.rstrip().endswith("- train: did not finish within 240 s")
    assert set(PART_ORDER) >= set(summary["parts"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--site", "none", "--out", "OUT"], "no CUDA device; this check is for a bare GPU machine"),
        (["run", "--site", "none", "--allow-cpu", "--out", "OUT"], "--width full needs a CUDA device"),
        (
            ["run", "--site", "none", "--allow-cpu", "--width", "tiny", "--cases", "rg/a100", "--out", "OUT"],
            "Unknown profile 'a100'",
        ),
        (
            ["run", "--cases", "xx/a100-80gb", "--out", "OUT"],
            "expected TASK/PROFILE[+expert-lora] such as rg/h100-80gb",
        ),
        (["run", "--cases", "rg/a100-80gb+other", "--out", "OUT"], "expected TASK/PROFILE[+expert-lora]"),
        (["run", "--layers", "0", "--out", "OUT"], "layer counts must be positive integers"),
        (["run", "--steps", "0", "--out", "OUT"], "--steps and --train-steps must be at least 1"),
        (
            ["run", "--site", "SITE", "--out", "OUT"],
            "no wheelhouse installed; run scripts/gpu_check.py install --part N",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(args, message, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    proc = _script(*[{"OUT": str(out), "SITE": str(tmp_path / "site")}.get(a, a) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not out.exists()


# --- slow: the real wheelhouse over a stand-in for the image, and the whole check there ---------------


@pytest.mark.slow
def test_the_real_wheelhouse_installs_over_the_image_and_the_whole_check_runs_there_on_cpu(tmp_path):
    """`make gpu-wheelhouse` from PyPI (the wheels at this environment's versions, slimmed, packed, and
    imported over the image's package set), then what a device call does: install the parts, run the
    check. The image is stood in for by this environment's copies of the image's packages alone (a bare
    interpreter, no site-packages), so a carried package that is missing fails to import; the check
    runs on CPU at tiny width: the cpu profile for the training run, the GPU profiles' shapes for the
    step benchmark at 32 tokens."""
    from bench.gpucheck import child_env
    from bench.wheelhouse import simulate_image

    whl = tmp_path / ".whl"
    proc = _script("wheelhouse", "--dir", str(whl), "--verify", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device calls (1, back to back on one warm machine):" in proc.stdout and "verify: imports" in proc.stdout
    manifest = json.loads((whl / "parts.json").read_text())
    assert len(manifest["parts"]) == 1 and manifest["parts"][0]["bytes"] + travel_bytes(REPO) <= LIMIT_BYTES

    image = simulate_image(tmp_path / "image")
    python = str(tmp_path / "image" / "venv" / "bin" / "python")
    site, out, work = tmp_path / ".gpu-site", tmp_path / "out", tmp_path / "work"
    env = child_env(REPO, [str(image)])
    proc = _script("install", "--part", "1", "--dir", str(whl), "--site", str(site), python=python, env=env)
    assert proc.returncode == 0 and "part 1 of 1: 35 wheels installed" in proc.stdout, proc.stderr
    args = ["run", "--allow-cpu", "--width", "tiny", "--site", str(site), "--layers", "1,2"]
    args += ["--cases", "rg/h100-80gb,rg/h100-80gb+expert-lora", "--set", "sequence_len=32"]
    args += ["--steps", "1", "--warmup", "0", "--out", str(out), "--work", str(work)]
    proc = _script(*args, python=python, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = json.loads((out / "gpu_check.json").read_text())
    assert validate_summary(summary) == [] and summary["ok"] is True and summary["problems"] == []
    parts = summary["parts"]
    assert {k: v["status"] for k, v in parts.items()} == dict.fromkeys(PART_ORDER, "ok")
    packages = parts["env"]["result"]["packages"]
    assert packages["axolotl"] == {"version": "0.21.0", "from": "wheelhouse"}
    assert packages["transformers"]["from"] == "wheelhouse" and packages["torch"]["from"] == "image"
    assert parts["env"]["result"]["bitsandbytes"]["library"] == "libbitsandbytes_cpu.so"
    tests = parts["tests"]["result"]
    assert tests["failed"] == tests["errors"] == 0 and tests["skipped"] == tests["tests"] == 3
    train = parts["train"]["result"]
    assert train["exit_status"] == 0 and train["adapter"] and train["probe_summary"]["measured_steps"] >= 1
    infer = parts["infer"]["result"]
    assert infer["quantization"] == {"expert_tensors": 4, "expert_tensors_4bit": 4, "linear_4bit": 8}
    assert infer["adapter"] == train["adapter"] and infer["lora_modules"] == 8 and infer["new_tokens"] > 0
    bench = parts["stepbench"]["result"]
    assert [(r["case"], r["layers"], r["ok"]) for r in bench["rows"]] == [
        ("rg/h100-80gb", 1, True),
        ("rg/h100-80gb+expert-lora", 1, True),
        ("rg/h100-80gb", 2, True),
        ("rg/h100-80gb+expert-lora", 2, True),
    ]
    plain, experts = bench["rows"][2], bench["rows"][3]
    assert plain["quantization"]["expert_tensors_4bit"] == 4 and plain["loader"] == "mixft"
    assert experts["trainable_parameters"] > plain["trainable_parameters"]  # LoRA on the fused experts too
    assert plain["gradient_checkpointing_kwargs"] == {"use_reentrant": False} and plain["optimizer"] == "adamw_bnb_8bit"
    for case in ("rg/h100-80gb", "rg/h100-80gb+expert-lora"):
        assert sorted(bench["plans"][case]) == ["1", "2", "32"]
        assert all(p["allocated_peak_gib"] > 0 for p in bench["plans"][case].values())
    # the expert-LoRA term is in the variant's plan only (tiny here: it rounds to 0 GiB)
    assert "expert_lora_transient" in bench["plans"]["rg/h100-80gb+expert-lora"]["32"]["parts_gib"]
    assert "expert_lora_transient" not in bench["plans"]["rg/h100-80gb"]["32"]["parts_gib"]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    assert not (work / "models").exists() or not any((work / "models").iterdir())
