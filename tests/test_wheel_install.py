"""A wheel install works like the checkout: build the wheel, install it into a fresh venv with no
source tree on the path, and run the pipeline's CPU commands on the data shipped inside it.

Two kinds of fresh venv:

- offline (``wheel_venv``): the third-party packages of the test environment come in through a
  ``.pth`` line (a plain path: the ``.pth`` files there, such as an editable install of mixft, are
  not run), so nothing is downloaded; mixft itself comes only from the wheel;
- from the registry (``registry_venv``): a Python 3.12 found as the Makefile finds one, a new venv,
  and ``pip install WHEEL`` (no extras, then ``[plots]``) from PyPI, so pip resolves the newest
  versions pyproject.toml's ranges allow, as a user's light install does today. The resolved
  versions are printed (``pytest -s``) and checked against the ranges. Skipped only when PyPI
  cannot be reached.
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
def built_wheel(tmp_path_factory, repo_root) -> Path:
    if not (repo_root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("builds the wheel from a git checkout (git ls-files)")
    tmp = tmp_path_factory.mktemp("build")
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
    shutil.rmtree(checkout)  # no source tree anywhere near the installs
    return next((tmp / "dist").glob("mixtral_ft-*.whl"))


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory, built_wheel):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = built_wheel
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


# --- a light install from PyPI, as a user gets it today -------------------------------------------

# What pip must not be able to reach: a network failure skips the test instead of failing it.
_OFFLINE_MARKERS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No address associated with hostname",
    "ProxyError",
    "Could not fetch URL",
)


def _runs_as_312(python: str) -> bool:
    check = "import sys; sys.exit(sys.version_info[:2] != (3, 12))"
    try:
        return subprocess.run([python, "-c", check], capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


def find_python312() -> str:
    """A Python 3.12 that runs, searched as the Makefile searches: ``python3.12`` on PATH, then pyenv's
    installed 3.12.x, newest first (a pyenv shim of a version that is not selected does not run, so
    each is tried); the interpreter under this test run (mixft needs 3.12) when neither is there."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.parts[-3].split(".") if x.isdigit())

    pyenv = sorted(root.glob("versions/3.12*/bin/python3.12"), key=version, reverse=True)
    candidates = [shutil.which("python3.12"), *map(str, pyenv), getattr(sys, "_base_executable", sys.executable)]
    found = next((c for c in candidates if c and _runs_as_312(c)), None)
    assert found, f"no Python 3.12 runs: tried {candidates}"
    return found


def _pyproject_ranges(repo_root: Path) -> dict[str, str]:
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): str(Requirement(d).specifier) for d in deps}


@pytest.fixture(scope="module", params=["", "plots"])
def registry_venv(request, tmp_path_factory, built_wheel):
    extra = request.param
    tmp = tmp_path_factory.mktemp(f"registry-{extra or 'light'}")
    venv = tmp / "venv"
    subprocess.run([find_python312(), "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    target = f"{built_wheel}[{extra}]" if extra else str(built_wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_NO_INDEX", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", target],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0 and any(m in proc.stdout + proc.stderr for m in _OFFLINE_MARKERS):
        pytest.skip(f"PyPI cannot be reached from here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    versions = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    print(f"\n[{extra or 'no extras'}] resolved: " + ", ".join(f"{k}=={v}" for k, v in sorted(versions.items())))
    env.update(MIXFT_PROGRESS="0", HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    work = tmp / "work"
    work.mkdir()
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    return {"venv": venv, "site": site, "env": env, "work": work, "extra": extra, "versions": versions}


def test_registry_install_resolves_within_the_declared_ranges(registry_venv, repo_root):
    from packaging.specifiers import SpecifierSet

    versions = registry_venv["versions"]
    for name, spec in _pyproject_ranges(repo_root).items():
        assert name in versions, f"{name} was not installed"
        assert versions[name] in SpecifierSet(spec), f"{name}=={versions[name]} outside {spec}"
    assert not {"torch", "transformers", "axolotl", "datasets"} & versions.keys()  # the light install is light
    assert ("matplotlib" in versions) == (registry_venv["extra"] == "plots")


def test_registry_install_runs_help_prepare_eval_and_report(registry_venv):
    """No extras: --help, prepare rg, eval rg and report run (the report without plots, saying which
    extra draws them); [plots]: the report with its PNG plots."""
    w = registry_venv
    data = w["site"] / "mixtral_ft" / "resources" / "data"
    work = w["work"]
    assert "prepare" in run(w, "mixft", "--help").stdout
    prepared = run(w, "mixft", "prepare", "rg", str(data / "sample_qa.jsonl"), "--out", "prepared-rg")
    assert "Prepared RG data" in prepared.stdout
    assert (work / "prepared-rg" / "train.jsonl").stat().st_size > 0
    evaluated = run(w, "mixft", "eval", "rg", "--verdicts", str(data / "sample_tc_responses.jsonl"), "--out", "eval-rg")
    assert "hallucination" in (evaluated.stdout + evaluated.stderr).lower()
    assert json.loads((work / "eval-rg" / "results.json").read_text())
    run(w, "mixft", "report", "eval-rg", "--out", "report")
    report = (work / "report" / "report.md").read_text()
    summary = json.loads((work / "report" / "report.json").read_text())
    assert "## Hallucination rates" in report and (work / "report" / "report.html").exists()
    if w["extra"] == "plots":
        assert (work / "report" / "hallucination_rates.png").stat().st_size > 0
        assert summary["plots"] == "drawn" and "Plots are not drawn" not in report
    else:  # matplotlib comes with [plots]: the report is written without its plots, and says so
        assert not list((work / "report").glob("*.png"))
        assert summary["plots"].startswith("plots not drawn: matplotlib is not installed")
        assert "Plots are not drawn: matplotlib is not installed (`pip install 'mixtral-ft[plots]'`)." in report
