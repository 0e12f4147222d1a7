"""`mixft train` without training: the launch command, --dry-run, preflight, the streaming runner."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.errors import InputError, PreflightError, UsageError
from mixtral_ft.train.launch import LaunchOptions, build_launch_command
from mixtral_ft.train.preflight import check_data, check_gpus, check_run_dir
from mixtral_ft.train.rundir import newest_checkpoint, read_summary
from mixtral_ft.train.runner import axolotl_env, run_streaming
from support.fixtures_models import rg_rows, tc_rows, write_split


def test_single_process_runs_axolotl_module_directly():
    assert build_launch_command("/r/axolotl.yml", python="py") == ["py", "-m", "axolotl.cli.train", "/r/axolotl.yml"]


def test_several_gpus_go_through_accelerate():
    cmd = build_launch_command(Path("/r/axolotl.yml"), LaunchOptions(gpus=4), python="py")
    assert cmd == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "4",
        "--num_machines",
        "1",
        "--machine_rank",
        "0",
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "axolotl.cli.train",
        "/r/axolotl.yml",
    ]


def test_multi_node_options_pass_through():
    cmd = build_launch_command(
        "c.yml",
        LaunchOptions(gpus=8, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29500),
        python="py",
    )
    joined = " ".join(cmd)
    assert "--num_processes 16 --num_machines 2 --machine_rank 1" in joined
    assert "--main_process_ip 10.0.0.1 --main_process_port 29500" in joined
    assert cmd[-3:] == ["-m", "axolotl.cli.train", "c.yml"]


def test_launch_rejects_zero_processes():
    with pytest.raises(ValueError):
        build_launch_command("c.yml", LaunchOptions(gpus=0))


def test_multi_node_without_the_rank_0_address_is_refused():
    """accelerate would build the rendezvous address "None:29500" (accelerate/utils/launch.py:224)."""
    with pytest.raises(UsageError) as e:
        build_launch_command("c.yml", LaunchOptions(gpus=8, num_machines=2, machine_rank=1), python="py")
    assert e.value.exit_code == 2
    assert str(e.value) == (
        "--num-machines 2 needs --main-process-ip (the address of machine rank 0, the same on every machine)"
    )
    with pytest.raises(UsageError, match=r"--machine-rank 2 with --num-machines 2: ranks are 0 to 1"):
        build_launch_command("c.yml", LaunchOptions(num_machines=2, machine_rank=2, main_process_ip="10.0.0.1"))


def test_multi_gpu_profile_with_one_process_is_refused():
    from mixtral_ft.train.launch import check_launch

    with pytest.raises(UsageError) as e:
        check_launch("multi-gpu", LaunchOptions())
    assert str(e.value).startswith("--profile multi-gpu shards the run over several GPUs (DeepSpeed ZeRO-2), but ")
    assert "add --gpus N (the GPUs of this machine, N > 1)" in str(e.value)
    check_launch("multi-gpu", LaunchOptions(gpus=2))
    check_launch("multi-gpu", LaunchOptions(num_machines=2, main_process_ip="10.0.0.1"))  # 2 processes in all
    check_launch("a100-80gb", LaunchOptions())
    with pytest.raises(UsageError, match="--main-process-ip"):
        check_launch("multi-gpu", LaunchOptions(gpus=4, num_machines=2))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--profile", "multi-gpu"], "add --gpus N"),
        (["--profile", "multi-gpu", "--gpus", "4", "--num-machines", "2"], "needs --main-process-ip"),
    ],
)
def test_cli_train_refuses_a_launch_that_cannot_be_meant(args, expected, tmp_path, capsys):
    data = write_split(tmp_path / "data", rg_rows("train", 2), rg_rows("test", 1))
    run_dir = tmp_path / "run"
    rc = main(["train", "rg", "--data", str(data), "--run-dir", str(run_dir), *args, "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not run_dir.exists()


def test_axolotl_env_telemetry_off_and_offline_for_local_models(tmp_path):
    env = axolotl_env(str(tmp_path))
    assert env["AXOLOTL_DO_NOT_TRACK"] == "1" and env["HF_HUB_OFFLINE"] == "1"


def test_dry_run_prints_config_and_command_and_writes_nothing(tmp_path, capsys):
    data = write_split(tmp_path / "data", rg_rows("train", 2), rg_rows("test", 1))
    run_dir = tmp_path / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(
        [
            "train",
            "rg",
            "--data",
            str(data),
            "--profile",
            "a100-80gb",
            "--run-dir",
            str(run_dir),
            "--gpus",
            "2",
            "--dry-run",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "quantize_moe_experts: true" in out and f"output_dir: {run_dir.resolve()}/output" in out
    assert "-m accelerate.commands.launch --num_processes 2" in out and "axolotl.cli.train" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not run_dir.exists()


def test_cpu_profile_refuses_several_processes(tmp_path, capsys):
    data = write_split(tmp_path / "data", rg_rows("train", 2), rg_rows("test", 1))
    rc = main(["train", "rg", "--data", str(data), "--profile", "cpu", "--gpus", "2", "--dry-run"])
    assert rc == 2
    assert "cannot train with several processes on CPU" in capsys.readouterr().err


def test_preflight_names_file_line_and_field(tmp_path):
    rows = rg_rows("train", 3)
    del rows[1]["answer"]
    rows[2]["context"] = ["a list", "of passages"]
    data = write_split(tmp_path / "d", rows, rg_rows("test", 1))
    with pytest.raises(InputError) as e:
        check_data("rg", data)
    lines = str(e.value).splitlines()
    assert lines[0] == f"{data / 'train.jsonl'}:2: answer: is missing (needed by the rg dataset type)"
    assert lines[1] == f"{data / 'train.jsonl'}:3: context: must be a non-empty string (needed by the rg dataset type)"
    tc = write_split(tmp_path / "t", tc_rows("train", 2), tc_rows("test", 1))
    assert check_data("tc", tc) == {"train": 2, "test": 1}
    with pytest.raises(InputError, match="prompt: is missing"):
        check_data("tc", data)


def test_preflight_missing_split_says_how_to_make_it(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(rg_rows("train", 1)[0]) + "\n")
    with pytest.raises(UsageError, match="test.jsonl: not found; `mixft prepare rg"):
        check_data("rg", tmp_path)


def test_preflight_refuses_to_clobber_a_run(tmp_path):
    (tmp_path / "axolotl.yml").write_text("x: 1\n")
    with pytest.raises(UsageError, match="use --resume"):
        check_run_dir(tmp_path, resume=False)
    check_run_dir(tmp_path, resume=True)
    with pytest.raises(UsageError, match="no run to resume"):
        check_run_dir(tmp_path / "other", resume=True)


def test_gpu_profile_without_cuda_fails_preflight():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(PreflightError, match="needs 1 CUDA GPU.*--profile cpu"):
        check_gpus("a100-80gb", 1)
    check_gpus("cpu", 4)


def test_cli_train_gpu_profile_on_cpu_exits_3_and_writes_nothing(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    data = write_split(tmp_path / "data", rg_rows("train", 2), rg_rows("test", 1))
    rc = main(["train", "rg", "--data", str(data), "--profile", "a100-80gb", "--run-dir", str(tmp_path / "run")])
    assert rc == 3
    assert "needs 1 CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_runner_streams_to_log_and_returns_status(tmp_path, capfd):
    log = tmp_path / "run.log"
    code = "import sys; print('hello', flush=True); print('to stderr', file=sys.stderr); sys.exit(7)"
    assert run_streaming([sys.executable, "-c", code], log) == 7
    text = log.read_text()
    assert "hello" in text and "to stderr" in text and "[mixft] exit status 7" in text
    assert "hello" in capfd.readouterr().err


def test_runner_forwards_ctrl_c_to_the_child(tmp_path):
    log = tmp_path / "run.log"
    code = (
        "import signal, sys, time\n"
        "def stop(*a):\n    print('child got SIGINT, saving', flush=True); sys.exit(5)\n"
        "signal.signal(signal.SIGINT, stop)\nprint('rea' + 'dy-now', flush=True)\ntime.sleep(30)\n"
    )

    def interrupt_when_ready():
        for _ in range(200):
            if log.exists() and "ready-now" in log.read_text():
                break
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):  # the child is stopped first, then the interruption goes on up
        run_streaming([sys.executable, "-c", code], log, echo=False, grace_s=10)
    text = log.read_text()
    assert "child got SIGINT, saving" in text and "[mixft] exit status 5 (stopped: KeyboardInterrupt" in text


def test_summary_reads_newest_trainer_state(tmp_path):
    out = tmp_path / "output"
    for step, loss in ((2, 3.0), (4, 2.5)):
        ck = out / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "trainer_state.json").write_text(
            json.dumps(
                {
                    "global_step": step,
                    "max_steps": 4,
                    "log_history": [
                        {"loss": loss + 0.5, "step": step - 1},
                        {"eval_loss": loss + 0.1, "step": step},
                        {"loss": loss, "step": step},
                    ],
                }
            )
        )
    (out / "checkpoint-6").mkdir()  # being written: no trainer_state.json yet
    (out / "adapter_config.json").write_text("{}")  # Axolotl pre-saves it at the start: not an adapter yet
    assert newest_checkpoint(out).name == "checkpoint-4"
    assert read_summary(out).adapter_dir is None
    (out / "adapter_model.safetensors").write_bytes(b"weights")  # saved at the end
    s = read_summary(out)
    assert (s.global_step, s.train_loss, s.eval_loss, s.adapter_dir) == (4, 2.5, 2.6, str(out))


# --- preflight checks that need the rendered config: flash-attn, DeepSpeed, per-GPU memory ---------------


def _values(profile: str, task: str = "rg", *overrides: str) -> dict:
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render

    return render(RenderRequest(task, Path("/data"), profile, Path("/runs/x"), overrides=overrides)).values


def test_flash_attention_without_flash_attn_fails_preflight_in_one_line(kernel_cache):
    import importlib.util

    from mixtral_ft.errors import MissingDependencyError
    from mixtral_ft.train.preflight import check_attention

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    for values in (
        _values("a100-80gb"),
        _values("h100-80gb", "tc"),
        _values("cpu", "rg", "flash_attention=true", "attn_implementation=null"),
    ):
        with pytest.raises(MissingDependencyError) as e:
            check_attention(values)
        msg = str(e.value)
        assert "\n" not in msg and e.value.exit_code == 3
        assert msg.startswith(
            "attn_implementation: flash_attention_2 needs flash-attn, but `import flash_attn` "
            "failed (ModuleNotFoundError: No module named 'flash_attn'), and its Hub kernel "
            "kernels-community/flash-attn2 is not available offline; "
        )
        assert "pip install flash-attn==2.8.3 --no-build-isolation" in msg and "--set attn_implementation=sdpa" in msg
    check_attention(_values("cpu"))  # sdpa needs nothing
    check_attention(_values("a100-80gb", "rg", "attn_implementation=sdpa"))


# --- attention from a Hugging Face Hub kernel (kernels-community/flash-attn2) --------------------------

HUB_KERNEL = "kernels-community/flash-attn2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test (the kernels package reads it through huggingface_hub's
    constants at call time), no $LOCAL_KERNELS, and the Hub reachable unless a test says otherwise."""
    pytest.importorskip("kernels")
    from huggingface_hub import constants

    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    for name in ("LOCAL_KERNELS", "KERNELS_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return root


def _kernel_build(folder: Path, variant: str = "torch-universal") -> Path:
    """One build variant as the Hub lays it out: build/<variant>/metadata.json (kernels' required fields)."""
    build = folder / "build" / variant
    build.mkdir(parents=True)
    meta = {"id": "x", "name": "flash-attn2", "version": 3, "license": "BSD-3-Clause"}
    meta |= {"backend": {"type": "cuda"}, "python-depends": []}
    (build / "metadata.json").write_text(json.dumps(meta))
    return folder


def _cache_kernel(cache: Path, version: int = 3, variant: str = "torch-universal", listed: tuple[str, ...] = ()):
    """The kernel in the Hugging Face cache as `hf download ... --repo-type kernel --revision vN` leaves it;
    ``listed``: more variants in the cached tree listing than were downloaded (a partial snapshot)."""
    repo = cache / "kernels--kernels-community--flash-attn2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / f"v{version}").write_text(COMMIT)
    _kernel_build(repo / "snapshots" / COMMIT, variant)
    if listed:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

        files = {f"build/{v}/metadata.json": TreeCacheEntry(size=1, blob_id=v) for v in (variant, *listed)}
        write_tree_cache(str(repo), COMMIT, files)


def _hub_kernel_values(tmp_path: Path, base_model: str | None = None) -> dict:
    base = tmp_path / "local-model"
    base.mkdir(exist_ok=True)
    values = _values("a100-80gb", "rg", f"attn_implementation={HUB_KERNEL}")
    values["base_model"] = base_model or str(base)  # a local directory: mixft runs Axolotl with HF_HUB_OFFLINE=1
    return values


def test_hub_kernel_offline_is_refused_unless_it_loads_from_the_cache(kernel_cache, tmp_path):
    from mixtral_ft.errors import MissingDependencyError
    from mixtral_ft.train.preflight import check_attention

    values = _hub_kernel_values(tmp_path)
    with pytest.raises(MissingDependencyError) as e:
        check_attention(values)
    msg = str(e.value)
    assert "\n" not in msg and e.value.exit_code == 3
    assert msg.startswith(
        f"attn_implementation: {HUB_KERNEL} is a Hugging Face Hub kernel and this run is offline (--base-model "
        "is a local directory, so mixft sets HF_HUB_OFFLINE=1), but kernels-community/flash-attn2 (version 3) is "
        "in neither $LOCAL_KERNELS nor the Hugging Face cache (Version 3 of 'kernels-community/flash-attn2' is "
        "not available in the local cache"
    )
    assert msg.endswith(
        '; make it loadable offline (docs/training.md, "Flash attention without flash-attn"), '
        "or run with --set attn_implementation=sdpa"
    )
    check_attention(_hub_kernel_values(tmp_path, base_model="org/hub-model"))  # online: loaded at model load
    _cache_kernel(kernel_cache)  # `hf download ... --revision v3`: refs/v3 and the whole snapshot
    check_attention(values)


def test_hub_kernel_needs_a_build_for_this_torch_and_a_complete_snapshot(kernel_cache, tmp_path):
    from mixtral_ft.errors import MissingDependencyError
    from mixtral_ft.train.preflight import check_attention

    _cache_kernel(kernel_cache, variant="torch29-cxx11-cu126-x86_64-linux")
    with pytest.raises(MissingDependencyError, match="as a complete snapshot with a build for this torch"):
        check_attention(_hub_kernel_values(tmp_path))


def test_hub_kernel_with_one_variant_of_a_listed_snapshot_does_not_load_offline(kernel_cache, tmp_path):
    """What `get_kernel` online or `hf download --include build/<variant>/*` leaves: the variant, and the
    whole tree listing; offline, huggingface_hub finds that snapshot incomplete and kernels refuses it."""
    from mixtral_ft.errors import MissingDependencyError
    from mixtral_ft.train.preflight import check_attention

    _cache_kernel(kernel_cache, listed=("torch29-cxx11-cu126-x86_64-linux",))
    with pytest.raises(MissingDependencyError, match="as a complete snapshot"):
        check_attention(_hub_kernel_values(tmp_path))


def test_hub_kernel_from_local_kernels_loads_offline(kernel_cache, tmp_path, monkeypatch):
    from mixtral_ft.train.preflight import check_attention

    folder = _kernel_build(tmp_path / "kernels" / "flash-attn2")
    monkeypatch.setenv("LOCAL_KERNELS", f"{HUB_KERNEL}={folder}")
    check_attention(_hub_kernel_values(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_attention(_hub_kernel_values(tmp_path, base_model="org/hub-model"))


def test_flash_attention_2_without_flash_attn_takes_the_cached_hub_kernel(kernel_cache):
    """transformers falls back to kernels-community/flash-attn2 (version 3) without flash-attn."""
    import importlib.util

    from mixtral_ft.train.preflight import check_attention

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    _cache_kernel(kernel_cache)
    check_attention(_values("a100-80gb"))


def test_the_memory_plan_takes_the_hub_flash_kernel_as_flash_attention():
    """The plan check runs before the launch: it must plan the Hub kernel as flash attention, not fail on it."""
    from mixtral_ft.plan.setup import setup_from_config

    for attn in (HUB_KERNEL, f"{HUB_KERNEL}@v3", f"{HUB_KERNEL}:flash_attn_varlen_func", "flash_attention_2"):
        values = _values("a100-80gb", "rg", f"attn_implementation={attn}")
        assert setup_from_config(values, on_gpu=True).attention_kind == "flash", attn
    assert (
        setup_from_config(_values("a100-80gb", "rg", "attn_implementation=sdpa"), on_gpu=True).attention_kind == "sdpa"
    )


def test_hub_kernel_names_read_as_transformers_reads_them():
    from mixtral_ft.train.hubkernel import is_hub_kernel, parse_kernel

    assert is_hub_kernel("kernels-community/flash-attn2") and is_hub_kernel("org/k@v2:fn")
    assert not is_hub_kernel("flash_attention_2") and not is_hub_kernel("a/b/c")
    assert parse_kernel("kernels-community/flash-attn2") == ("kernels-community/flash-attn2", None, 3)
    assert parse_kernel("org/k@abc123:flash_fn") == ("org/k", "abc123", None)


def test_deepspeed_config_without_deepspeed_fails_preflight_with_the_install_command():
    import importlib.util

    from mixtral_ft.errors import MissingDependencyError
    from mixtral_ft.train.preflight import check_deepspeed

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    with pytest.raises(MissingDependencyError) as e:
        check_deepspeed(_values("multi-gpu", "tc"))
    msg = str(e.value)
    assert "\n" not in msg and "`import deepspeed` failed (ModuleNotFoundError: No module named 'deepspeed')" in msg
    assert msg.endswith(
        "install it: pip install 'mixtral-ft[deepspeed]' (axolotl[deepspeed]==0.21.0: deepspeed>=0.18.6,<0.20)"
    )
    check_deepspeed(_values("a100-80gb"))  # no DeepSpeed asked, nothing to import


def test_deepspeed_extra_is_axolotls_own():
    """Our extra installs Axolotl's, so the DeepSpeed pin is the one Axolotl 0.21.0 declares."""
    import importlib.metadata
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["deepspeed"] == ["axolotl[deepspeed]==0.21.0"]
    try:
        requires = importlib.metadata.requires("axolotl") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("axolotl not installed")
    assert 'deepspeed<0.20.0,>=0.18.6; extra == "deepspeed"' in requires


def test_multi_gpu_cards_need_what_one_80gb_card_needs():
    from mixtral_ft.plan.gpus import gpu_for_profile

    assert gpu_for_profile("multi-gpu") == gpu_for_profile("a100-80gb")  # what the memory plan checks against
    for task in ("rg", "tc"):  # and the same per-card micro batch
        multi, single = _values("multi-gpu", task), _values("a100-80gb", task)
        assert (multi["micro_batch_size"], multi["gradient_accumulation_steps"]) == (
            single["micro_batch_size"],
            single["gradient_accumulation_steps"],
        )


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("attn_implementation=flash_attention_2", "needs flash-attn, but `import flash_attn` failed"),
        ("deepspeed=${configs_dir}/deepspeed/zero2.json", "`import deepspeed` failed"),
        (f"attn_implementation={HUB_KERNEL}", "is a Hugging Face Hub kernel and this run is offline"),
    ],
)
def test_cli_train_refuses_a_missing_package_before_anything_is_written(
    setting, expected, kernel_cache, tiny_mixtral_dir, tmp_path, capsys
):
    import importlib.util

    module = "kernels" if HUB_KERNEL in setting else "flash_attn" if "flash" in setting else "deepspeed"
    if module != "kernels" and importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    data = write_split(tmp_path / "data", rg_rows("train", 2), rg_rows("test", 1))
    run_dir = tmp_path / "run"
    base = tiny_mixtral_dir  # a local base model: Axolotl runs offline
    # The cpu profile skips the GPU check, so this reaches the config checks on a CPU machine.
    args = ["train", "rg", "--data", str(data), "--profile", "cpu", "--run-dir", str(run_dir), "--set", setting]
    rc = main([*args, "--base-model", str(base)])
    assert rc == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("run directory:") and len(err) == 2  # the announcement, then the one-line error
    assert err[1].startswith("error: ") and expected in err[1]
    assert not run_dir.exists()


def test_mixft_help_imports_no_axolotl():
    """`mixft --help` (and `mixft train --help`) stay light: Axolotl's own `--help` takes seconds to import
    (docs/design/training-notes.md, "What Axolotl 0.21 offers this pipeline", start-up)."""
    import subprocess
    import sys

    code = (
        "import sys; from mixtral_ft.cli.main import main\n"
        "for args in (['--help'], ['train', '--help']):\n"
        "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('axolotl', 'torch', 'transformers', 'peft') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
