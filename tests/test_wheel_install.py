"""A wheel install works like the checkout: build the wheel, install it into a fresh venv with no
source tree on the path, and run the pipeline's CPU commands on the data shipped inside it.

The fresh venv gets the third-party packages of the test environment through a ``.pth`` line (a
plain path: the ``.pth`` files there, such as an editable install of mixft, are not run), so
nothing is downloaded; mixft itself comes only from the wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _copy_checkout(repo: Path, dest: Path) -> None:
    """The files git knows (tracked, and new ones not ignored), symbolic links kept as links."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = repo / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, target)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory, repo_root):
    if not (repo_root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("builds the wheel from a git checkout (git ls-files)")
    tmp = tmp_path_factory.mktemp("wheel")
    checkout = tmp / "checkout"
    _copy_checkout(repo_root, checkout)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "-w",
            str(tmp / "dist"),
            str(checkout),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheel = next((tmp / "dist").glob("mixtral_ft-*.whl"))
    venv = tmp / "venv"
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_mixft_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)), encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    shutil.rmtree(checkout)  # no source tree anywhere near the install
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MIXFT_CONFIGS_DIR", "VIRTUAL_ENV")}
    env.update(MIXFT_PROGRESS="0", HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    work = tmp / "work"
    work.mkdir()
    return {"venv": venv, "site": site, "wheel": wheel, "env": env, "work": work}


def run(w, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(w["venv"] / "bin" / args[0]), *args[1:]],
        check=False,
        cwd=w["work"],
        env=w["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_the_wheel_carries_configs_prompt_and_sample_data(wheel_venv, repo_root):
    import zipfile

    names = set(zipfile.ZipFile(wheel_venv["wheel"]).namelist())
    for rel in (
        "configs/rg.yml",
        "configs/tc.yml",
        "configs/profiles/cpu.yml",
        "configs/deepspeed/zero2.json",
        "configs/prompts/tc_v1.txt",
        "data/sample_qa.jsonl",
        "data/sample_tc_responses.jsonl",
    ):
        assert f"mixtral_ft/resources/{rel}" in names, rel
    assert not any("/data/kb/" in n for n in names)  # the hand-written sources stay in the repository
    shipped = wheel_venv["site"] / "mixtral_ft" / "resources" / "configs" / "rg.yml"
    assert not shipped.is_symlink() and shipped.read_bytes() == (repo_root / "configs" / "rg.yml").read_bytes()


def test_mixft_runs_from_the_wheel_alone(wheel_venv):
    probe = run(
        wheel_venv,
        "python",
        "-c",
        "import sys, mixtral_ft\n"
        "from mixtral_ft.resources import configs_dir, data_dir\n"
        "print(mixtral_ft.__file__); print(configs_dir()); print(data_dir())\n"
        "print([p for p in sys.path if __import__('os').path.isdir(p + '/mixtral_ft')])",
    )
    module, configs, data, roots = probe.stdout.splitlines()
    site = str(wheel_venv["site"])
    assert module.startswith(site) and configs.startswith(site) and data.startswith(site)
    assert roots == repr([site])  # no source tree (and no editable finder) on the path


def test_pipeline_cpu_commands_on_the_bundled_data(wheel_venv, repo_root):
    site = wheel_venv["site"]
    data = site / "mixtral_ft" / "resources" / "data"
    work = wheel_venv["work"]

    rg = run(
        wheel_venv,
        "mixft",
        "prepare",
        "rg",
        str(data / "sample_qa.jsonl"),
        "--group-by",
        "article_id",
        "--out",
        "prepared-rg",
    )
    assert "Prepared RG data" in rg.stdout
    counts = json.loads((work / "prepared-rg" / "manifest.json").read_text())["summary"]
    assert counts["train"] + counts["test"] == 324 and counts["test"] > 0

    render = run(
        wheel_venv,
        "mixft",
        "config",
        "render",
        "rg",
        "--data",
        "prepared-rg",
        "--profile",
        "cpu",
        "--out",
        "axolotl.yml",
    )
    text = (work / "axolotl.yml").read_text()
    assert "validated by Axolotl's validate_config" in text, render.stderr
    assert str((work / "prepared-rg" / "train.jsonl").resolve()) in text

    tc = run(
        wheel_venv,
        "mixft",
        "prepare",
        "tc",
        str(data / "sample_tc_responses.jsonl"),
        "--group-by",
        "group",
        "--out",
        "prepared-tc",
    )
    assert "hallucinated" in tc.stdout
    manifest = json.loads((work / "prepared-tc" / "manifest.json").read_text())
    template = (repo_root / "configs" / "prompts" / "tc_v1.txt").read_bytes().decode("utf-8")
    assert manifest["prompt_sha256"] == hashlib.sha256(template.encode("utf-8")).hexdigest()

    listed = run(wheel_venv, "mixft", "config", "list")
    assert "profiles/a100-80gb" in listed.stdout and str(site) in listed.stderr
    run(wheel_venv, "mixft", "config", "copy", "all", "my-configs")
    assert (work / "my-configs" / "prompts" / "tc_v1.txt").read_text() == template

    demo = run(wheel_venv, "mixft", "demo", "--help")
    assert "--model" in demo.stdout
