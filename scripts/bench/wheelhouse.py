"""The wheels a bare GPU machine lacks, packed into parts that each travel in one device call.

A bare GPU machine (docs/design/gpu-check.md) has Python 3.12 with torch and transformers but no
bitsandbytes, peft, Axolotl or flash-attn, no network, and a device call carries at most 64 MiB:
the working tree plus the paths named in ``carry``. Here, with PyPI:

1. :data:`CARRY`, the distributions a GPU training run imports that the image lacks (or has at
   another version than Axolotl 0.21.0 pins), are fetched at the versions of this environment as
   binary wheels for cp312 manylinux x86_64 (``pip download --only-binary=:all:``); the two
   Axolotl contrib packages published only as source are built into wheels (pure Python).
2. :func:`slim_rules` drop what the machine never loads: bitsandbytes' kernels for CUDA versions
   other than the image torch's, wandb's service binaries. A slimmed wheel keeps its file name
   and its RECORD lists exactly what it holds.
3. :func:`pack_parts` packs the wheels into parts that each fit the budget beside the working
   tree, keeping wheels that install into one top-level package (``axolotl`` and its contribs)
   in one part, and writes ``.whl/partN/`` with the manifest ``parts.json`` in each.

There, :func:`install_part` (stdlib and pip only) installs one part into ``.gpu-site/partN``,
idempotently (a stamp holds the wheels' hashes), and :func:`check_site` says whether every part
is there before the check runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 2**20
LIMIT_BYTES = 64 * MIB  # what one device call carries: the working tree and the carried paths
MANIFEST = "parts.json"
STAMP = ".mixft-part.json"
SCHEMA = "mixft-gpu-wheelhouse/v1"
SITE_DIR = ".gpu-site"  # in the repository root on the machine; git-ignored, kept between calls

# The image's Python packages ("Python packages already there", read on 2026-11-17): what is not
# carried comes from here. Versions seen there where they matter to this stack (its pip list, 2026-11).
IMAGE_PACKAGES = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
    cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
    huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
    llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
    multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
    nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
    nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
    nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
    patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
    py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
    safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
    setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
    torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
    typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
    zipp""".split()
)
IMAGE_SEEN = {
    "torch": "2.11.0+cu130",
    "transformers": "5.17.0",
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "tokenizers": "0.23.2",
    "safetensors": "0.8.0",
    "numpy": "2.5.2",
    "triton": "3.6.0",
}


@dataclass(frozen=True)
class Carry:
    """One distribution the machine gets from the wheelhouse, and why."""

    name: str
    why: str
    build: bool = False  # published as a source package only: built here into a wheel (pure Python)


# What a GPU training run of this stack imports that the image lacks, or has at another version than
# the one pinned here (docs/design/gpu-check.md, "What travels": found by recording the modules every
# process of a CPU training run and of the CPU twin imported, then checked by installing the parts
# over the image's package set alone and running a training run there). Versions: this environment's.
CARRY: tuple[Carry, ...] = (
    Carry("bitsandbytes", "4-bit linears and experts, 8-bit AdamW (not in the image)"),
    Carry("transformers", "Axolotl 0.21.0 pins 5.20.1; the image has 5.17"),
    Carry("peft", "Axolotl 0.21.0 pins 0.21.2; the image's is not that pin"),
    Carry("axolotl", "the trainer mixft runs"),
    Carry("axolotl-contribs-lgpl", "imported by axolotl.train; on PyPI as source only", build=True),
    Carry("axolotl-contribs-mit", "Axolotl's optimizer contribs (axolotl.contribs.mit); source only", build=True),
    Carry("trl", "Axolotl's trainers"),
    Carry("datasets", "Axolotl's data loading"),
    Carry("fsspec", "datasets 5.0.1 takes fsspec <= 2026.6.0; carried at the tested version"),
    Carry("dill", "datasets"),
    Carry("multiprocess", "datasets"),
    Carry("evaluate", "Axolotl's callbacks"),
    Carry("kernels", "Axolotl 0.21 imports it at start"),
    Carry("torchao", "Axolotl's optimizer and quantization modules import it"),
    Carry("wandb", "imported by Axolotl's callbacks, whether or not W&B is used"),
    Carry("posthog", "Axolotl's telemetry client (off: AXOLOTL_DO_NOT_TRACK=1)"),
    Carry("backoff", "posthog"),
    Carry("distro", "posthog"),
    Carry("mistral-common", "Axolotl's Mistral tokenizer module, imported at start"),
    Carry("pycountry", "mistral-common"),
    Carry("pydantic", "Axolotl's config schema"),
    Carry("pydantic-core", "pydantic"),
    Carry("pydantic-extra-types", "mistral-common"),
    Carry("annotated-types", "pydantic"),
    Carry("typing-inspection", "pydantic"),
    Carry("fastcore", "Axolotl"),
    Carry("fire", "Axolotl's command line"),
    Carry("termcolor", "fire"),
    Carry("addict", "Axolotl"),
    Carry("platformdirs", "wandb"),
    Carry("opentelemetry-api", "wandb"),
    Carry("zstandard", "Axolotl pins it; datasets reads compressed files with it"),
    Carry("orjson", "mixft's JSON lines (a base dependency the image lacks)"),
    Carry("typer", "mixft's command line at the version it is tested with (the image's may be another)"),
    Carry("click", "typer's, at the version mixft is tested with"),
)

# pip's platform tags for the machine (x86-64 Linux, glibc >= 2.28); pip matches each tag exactly.
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "manylinux_2_5_x86_64",
)


def normal(name: str) -> str:
    """A distribution's normalized name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> str:
    """The distribution a wheel file holds (``bitsandbytes-0.50.2-py3-none-...whl`` -> ``bitsandbytes``)."""
    return normal(filename.split("-", 1)[0])


def wheel_version(filename: str) -> str:
    return filename.split("-")[1]


def pinned_versions(names: Iterable[str] | None = None) -> dict[str, str]:
    """``name -> version`` as installed here: the machine then runs what the tests ran."""
    from importlib import metadata

    return {n: metadata.version(n) for n in (names if names is not None else [c.name for c in CARRY])}


def pip_download_command(
    dest: Path, pins: dict[str, str], python: str = "python3", python_version: str = "3.12"
) -> list[str]:
    """The ``pip download`` that fetches ``pins`` as binary wheels for the machine, without dependencies."""
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--implementation", "cp"]
    for tag in PLATFORMS:
        cmd += ["--platform", tag]
    return cmd + ["-d", str(dest)] + [f"{name}=={version}" for name, version in pins.items()]


def pip_build_command(dest: Path, pins: dict[str, str], python: str = "python3") -> list[str]:
    """The ``pip wheel`` that builds pure-Python wheels of source-only ``pins``, without dependencies."""
    return [python, "-m", "pip", "wheel", "--no-deps", "--no-binary=:all:", "-w", str(dest)] + [
        f"{name}=={version}" for name, version in pins.items()
    ]


@dataclass(frozen=True)
class Slim:
    """Members of one distribution's wheel that the machine never loads, and why."""

    dist: str
    pattern: str  # a regular expression over the member's path in the wheel
    why: str

    def drops(self, member: str) -> bool:
        return re.search(self.pattern, member) is not None


def slim_rules(bnb_cuda: tuple[str, ...] = ("13",)) -> tuple[Slim, ...]:
    """What :func:`slim_wheel` drops. ``bnb_cuda``: the CUDA versions whose bitsandbytes kernels stay,
    as prefixes of bitsandbytes' library suffix ("13" keeps cuda130 and cuda132, "128" keeps cuda128).

    bitsandbytes loads the library named after ``torch.version.cuda``, else another of the same major
    version, never one of another major (``bitsandbytes/cextension.py``, ``get_cuda_bnb_library_path``);
    the image's torch is built with CUDA 13.0. wandb's ``bin/`` holds the programs ``wandb.init`` starts
    (wandb-core, wandb-symon, a parquet library): Axolotl imports wandb, but with W&B off, as mixft
    runs it here, nothing starts them.
    """
    keep = "|".join(re.escape(v) for v in bnb_cuda)
    return (
        Slim(
            "bitsandbytes",
            rf"^bitsandbytes/libbitsandbytes_(?:rocm\d+|xpu\d+|cuda(?!(?:{keep}))\d+)\.so$",
            f"kernels for ROCm, XPU and CUDA versions other than {', '.join(bnb_cuda)}.x",
        ),
        Slim("wandb", r"^wandb/bin/.", "the W&B service programs, started only by a W&B run"),
    )


def slim_wheel(src: Path, dst: Path, rule: Slim) -> dict[str, Any]:
    """Copy wheel ``src`` to ``dst`` without the members ``rule`` drops; RECORD loses their lines."""
    dropped: list[str] = []
    saved = 0
    tmp = dst.with_name(dst.name + ".part")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if rule.drops(info.filename):
                dropped.append(info.filename)
                saved += info.compress_size
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode("utf-8").splitlines(keepends=True)
                data = "".join(ln for ln in lines if not rule.drops(ln.split(",", 1)[0])).encode("utf-8")
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(dst)
    return {"wheel": dst.name, "dropped": dropped, "saved_mib": round(saved / MIB, 2), "why": rule.why}


def top_level_names(wheel: Path) -> set[str]:
    """The top-level entries a wheel installs (packages, modules), from its member paths."""
    names = set()
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            top = member.split("/", 1)[0]
            if not top.endswith((".dist-info", ".data")):
                names.add(top.removesuffix(".py"))
    return names


def pack_parts(sizes: dict[str, int], tops: dict[str, set[str]], capacity: int) -> list[list[str]]:
    """Wheels (file -> bytes) into as few parts of at most ``capacity`` bytes as first-fit decreasing
    finds. Wheels that install into one top-level name go together: ``pip install --target`` replaces a
    top-level directory that is already there, so ``axolotl`` and ``axolotl/contribs/...`` must land in
    one install."""
    groups: list[set[str]] = []
    for wheel in sorted(sizes):
        joined = [g for g in groups if any(tops.get(wheel, set()) & tops.get(w, set()) for w in g)]
        merged = {wheel}.union(*joined)
        groups = [g for g in groups if g not in joined] + [merged]
    parts: list[list[str]] = []
    used: list[int] = []
    for group in sorted(groups, key=lambda g: (-sum(sizes[w] for w in g), sorted(g))):
        size = sum(sizes[w] for w in group)
        if size > capacity:
            raise ValueError(
                f"{', '.join(sorted(group))}: {size / MIB:.1f} MiB, more than the "
                f"{capacity / MIB:.1f} MiB a call has left beside the working tree"
            )
        for i, u in enumerate(used):
            if u + size <= capacity:
                parts[i] += sorted(group)
                used[i] += size
                break
        else:
            parts.append(sorted(group))
            used.append(size)
    return [sorted(p, key=lambda w: (-sizes[w], w)) for p in parts]


def travel_bytes(repo: Path) -> int:
    """Bytes of what a device call sends besides ``carry``: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for rel in filter(None, out.split(b"\0")):
        path = repo / rel.decode()
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def device_calls(parts: int, check_timeout_s: int = 600) -> list[dict[str, Any]]:
    """The device calls that install ``parts`` parts and run the check: one per part, the check in the
    last. A part installed by an earlier call stays in ``.gpu-site`` only while the machine stays warm
    (about 30 s after a call), so the calls go back to back."""
    calls = []
    for n in range(1, parts + 1):
        install = f"python3 scripts/gpu_check.py install --part {n}"
        last = n == parts
        calls.append(
            {
                "command": f"{install} && PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py run --out $OUT"
                if last
                else install,
                "carry": [f".whl/part{n}"],
                "timeout_s": check_timeout_s if last else 180,
            }
        )
    return calls


def _fetch(download: Path, pins: dict[str, str], python: str) -> None:
    """``download`` holds exactly one wheel of each pin: stale versions removed, missing ones fetched."""
    wanted = {normal(n): v for n, v in pins.items()}
    have = {}
    for wheel in download.glob("*.whl"):
        name = wheel_name(wheel.name)
        if wanted.get(name) != wheel_version(wheel.name):
            wheel.unlink()  # another version would stop the install there
        else:
            have[name] = wheel
    build = {c.name for c in CARRY if c.build}
    missing = {n: v for n, v in pins.items() if normal(n) not in have}
    binary = {n: v for n, v in missing.items() if n not in build}
    source = {n: v for n, v in missing.items() if n in build}
    commands = []
    if binary:
        commands.append(pip_download_command(download, binary, python=python))
    if source:
        commands.append(pip_build_command(download, source, python=python))
    for cmd in commands:
        proc = subprocess.run(cmd, text=True, capture_output=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise RuntimeError(f"{' '.join(cmd[2:4])} failed: {last}")


def build_wheelhouse(
    dest: Path,
    tree_bytes: int,
    pins: dict[str, str] | None = None,
    bnb_cuda: tuple[str, ...] = ("13",),
    slim: bool = True,
    python: str = sys.executable,
    limit: int = LIMIT_BYTES,
) -> dict[str, Any]:
    """Fetch, slim and pack the wheelhouse into ``dest/partN/``; returns the manifest (also written)."""
    pins = pins if pins is not None else pinned_versions()
    download = dest / "download"
    download.mkdir(parents=True, exist_ok=True)
    _fetch(download, pins, python)
    final = dest / "final"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    rules = {r.dist: r for r in slim_rules(bnb_cuda)} if slim else {}
    slimmed = []
    for wheel in sorted(download.glob("*.whl")):
        rule = rules.get(wheel_name(wheel.name))
        if rule is not None:
            slimmed.append(slim_wheel(wheel, final / wheel.name, rule))
        else:
            shutil.copy2(wheel, final / wheel.name)
    sizes = {w.name: w.stat().st_size for w in final.glob("*.whl")}
    tops = {w.name: top_level_names(w) for w in final.glob("*.whl")}
    layout = pack_parts(sizes, tops, limit - tree_bytes)
    for old in dest.glob("part*"):
        shutil.rmtree(old)
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pins": pins,
        "bnb_cuda": list(bnb_cuda),
        "slimmed": slimmed,
        "tree_bytes": tree_bytes,
        "limit_bytes": limit,
        "parts": [],
    }
    for n, files in enumerate(layout, start=1):
        part = dest / f"part{n}"
        part.mkdir()
        for f in files:
            (final / f).replace(part / f)
        manifest["parts"].append(
            {
                "part": n,
                "bytes": sum(sizes[f] for f in files),
                "wheels": [{"file": f, "bytes": sizes[f], "sha256": sha256(part / f)} for f in files],
            }
        )
    shutil.rmtree(final)
    for entry in manifest["parts"]:
        (dest / f"part{entry['part']}" / MANIFEST).write_text(
            json.dumps(dict(manifest, part=entry["part"]), indent=1) + "\n", encoding="utf-8"
        )
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def wheelhouse_problems(manifest: dict[str, Any], expected: Iterable[str]) -> list[str]:
    """What stops a wheelhouse: a carried distribution with no wheel or two, a part over the budget."""
    problems = []
    names = [wheel_name(w["file"]) for p in manifest["parts"] for w in p["wheels"]]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: more than one wheel; keep one version")
    for name in expected:
        if normal(name) not in names:
            problems.append(f"{name}: no wheel")
    for p in manifest["parts"]:
        total = p["bytes"] + manifest["tree_bytes"]
        if total > manifest["limit_bytes"]:
            problems.append(
                f"part {p['part']}: wheels {p['bytes'] / MIB:.1f} MiB + working tree "
                f"{manifest['tree_bytes'] / MIB:.1f} MiB = {total / MIB:.1f} MiB, over the "
                f"{manifest['limit_bytes'] / MIB:.0f} MiB a device call carries"
            )
    return problems


def render_plan(manifest: dict[str, Any]) -> str:
    """The parts, their sizes, and the device calls, as `make gpu-wheelhouse` prints them."""
    tree = manifest["tree_bytes"] / MIB
    lines = []
    for p in manifest["parts"]:
        lines.append(
            f"part {p['part']}: {len(p['wheels'])} wheels, {p['bytes'] / MIB:.2f} MiB + working tree {tree:.2f} MiB "
            f"= {(p['bytes'] / MIB + tree):.2f} of {manifest['limit_bytes'] / MIB:.0f} MiB"
        )
        for w in p["wheels"][:6]:
            lines.append(f"  {w['bytes'] / MIB:7.2f} MiB  {w['file']}")
        if len(p["wheels"]) > 6:
            rest = sum(w["bytes"] for w in p["wheels"][6:])
            lines.append(f"  {rest / MIB:7.2f} MiB  {len(p['wheels']) - 6} more")
    for s in manifest["slimmed"]:
        lines.append(f"slimmed {s['wheel']}: -{s['saved_mib']} MiB ({s['why']})")
    calls = device_calls(len(manifest["parts"]))
    lines.append(f"\ndevice calls ({len(calls)}, back to back on one warm machine):")
    for i, c in enumerate(calls, start=1):
        lines.append(
            f"  {i}. send {', '.join(c['carry'])} beside the working tree; run (at most {c['timeout_s']} s): "
            f"{c['command']}"
        )
    return "\n".join(lines)


# --- on the machine: stdlib and pip only -------------------------------------------------------------


def _part_hashes(entry: dict[str, Any]) -> list[str]:
    return sorted(f"{w['file']}:{w['sha256']}" for w in entry["wheels"])


def install_part(
    part_dir: Path, site: Path, python: str = sys.executable, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Install the wheels of ``part_dir`` into ``site/partN`` (``pip install --target``, no index, no
    dependencies), unless the stamp there already names the same wheels; copies the manifest to
    ``site``. Raises ``RuntimeError`` with one line on a missing or altered wheel or a failed install."""
    manifest = json.loads((part_dir / MANIFEST).read_text(encoding="utf-8"))
    n = int(manifest["part"])
    entry = manifest["parts"][n - 1]
    target = site / f"part{n}"
    stamp = target / STAMP
    site.mkdir(parents=True, exist_ok=True)
    (site / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")).get("wheels") == _part_hashes(entry):
        say(f"part {n} of {len(manifest['parts'])}: already installed in {target}")
        return {"part": n, "installed": False, "target": str(target)}
    for w in entry["wheels"]:
        path = part_dir / w["file"]
        if not path.exists() or sha256(path) != w["sha256"]:
            raise RuntimeError(f"{path}: missing or not the wheel the manifest names; rebuild with make gpu-wheelhouse")
    shutil.rmtree(target, ignore_errors=True)
    t0 = time.monotonic()
    cmd = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    cmd += ["--disable-pip-version-check", "--target", str(target)]
    proc = subprocess.run(cmd + [str(part_dir / w["file"]) for w in entry["wheels"]], text=True, capture_output=True)
    if proc.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise RuntimeError(f"pip install of part {n} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    stamp.write_text(json.dumps({"part": n, "wheels": _part_hashes(entry)}) + "\n", encoding="utf-8")
    seconds = round(time.monotonic() - t0, 1)
    say(f"part {n} of {len(manifest['parts'])}: {len(entry['wheels'])} wheels installed in {target} ({seconds} s)")
    return {"part": n, "installed": True, "target": str(target), "seconds": seconds}


def check_site(site: Path) -> tuple[list[Path], list[str]]:
    """The install folders of every part in ``site`` (for ``PYTHONPATH``), and what is missing."""
    path = site / MANIFEST
    if not path.exists():
        return [], [f"{site}: no wheelhouse installed; run scripts/gpu_check.py install --part N first"]
    manifest = json.loads(path.read_text(encoding="utf-8"))
    dirs, problems = [], []
    total = len(manifest["parts"])
    for entry in manifest["parts"]:
        target = site / f"part{entry['part']}"
        stamp = target / STAMP
        ok = stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")).get("wheels") == _part_hashes(entry)
        if ok:
            dirs.append(target)
        else:
            call = device_calls(total)[entry["part"] - 1]
            problems.append(
                f"part {entry['part']} of {total} is not installed on this machine (a fresh machine: an earlier "
                f"call's install is gone once the machine is given back); run call {entry['part']} again: "
                f"{call['command']} with carry {call['carry']}"
            )
    return dirs, problems


# --- here: the image's package set, to try a wheelhouse on before a device call spends time on it ----


def simulate_image(dest: Path) -> Path:
    """``dest/site``: links to the top-level entries of this environment's distributions that the image
    also has (:data:`IMAGE_PACKAGES`), and to nothing else. On ``PYTHONPATH`` under an interpreter with no
    site-packages of its own (``dest/python``, a bare venv), with the parts before it, it stands for the
    machine: what the wheelhouse lacks fails to import. Versions are this environment's, not the image's."""
    import sysconfig
    from importlib import metadata

    site = dest / "site"
    shutil.rmtree(dest, ignore_errors=True)
    site.mkdir(parents=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    for dist in metadata.distributions(path=[str(purelib)]):
        if normal(dist.metadata["Name"]) not in IMAGE_PACKAGES:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = purelib / top
            if top.endswith(".pth") or top == ".." or not src.exists() or (site / top).exists():
                continue
            (site / top).symlink_to(src)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest / "venv")], check=True)
    return site
