"""``make gpu-check``: the pieces of the GPU check that need no GPU (scripts/gpu_check.py runs them).

A bare GPU machine (one H100/H200, a 10-minute command, no network) has Python 3.12 with torch and
transformers, but no bitsandbytes, peft, Axolotl or flash-attn. What it lacks travels as wheels,
at most 64 MiB per call together with the working tree. Measured (docs/design/gpu-check.md): bitsandbytes 0.50.2 alone is 41.1 MiB; Axolotl 0.19.0 and the other packages
a CPU training run imports that the image lacks are 54.4 MiB more in 52 wheels (wandb 19.4,
pycountry 7.7, mistral-common 6.2, zstandard 5.2, torchao 3.1, ...) plus two Axolotl contrib
packages published only as source, so Axolotl does not fit beside bitsandbytes (~96 MiB). The check is built around what fits: bitsandbytes, peft and transformers at
Axolotl 0.19.0's pins, and mixft's small base dependencies the image lacks.

Here: the wheel list and its pip command, the size check, the JUnit reader and the summary
schema, all pure or file-only, tested on CPU.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MIB = 2**20
LIMIT_BYTES = 64 * MIB  # what one device call carries: working tree + carried paths
SUMMARY_SCHEMA = "mixft-gpu-check/v1"

# Distributions the GPU machine's image lacks, at the versions of this environment (which are
# Axolotl 0.19.0's pins for the first three; a test checks that). transformers is carried because
# the image's (5.17) is not the one Axolotl 0.19.0 pins and mixft's 4-bit load plan patches its loader.
WHEEL_PACKAGES: tuple[tuple[str, str], ...] = (
    ("bitsandbytes", "4-bit linears and experts, 8-bit AdamW"),
    ("peft", "LoRA"),
    ("transformers", "the version Axolotl 0.19.0 pins (the image has another)"),
    ("orjson", "a mixft base dependency the image lacks (test collection imports it)"),
    ("jsonschema", "a mixft base dependency the image lacks"),
    ("jsonschema-specifications", "jsonschema's"),
    ("referencing", "jsonschema's"),
    ("rpds-py", "jsonschema's"),
)
_WHEEL_NAMES = tuple(name for name, _ in WHEEL_PACKAGES)
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


def pinned_versions(names: Iterable[str] = _WHEEL_NAMES) -> dict[str, str]:
    """``name -> version`` as installed here: the GPU machine then runs what the tests ran."""
    from importlib import metadata

    return {name: metadata.version(name) for name in names}


def pip_download_command(
    dest: Path, pins: dict[str, str], python: str = "python3", python_version: str = "3.12"
) -> list[str]:
    """The ``pip download`` that fetches ``pins`` as binary wheels for the GPU machine, without dependencies."""
    cmd = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
    ]
    for tag in PLATFORMS:
        cmd += ["--platform", tag]
    return cmd + ["-d", str(dest)] + [f"{name}=={version}" for name, version in pins.items()]


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def wheel_name(filename: str) -> str:
    """The distribution a wheel file holds (``bitsandbytes-0.50.2-py3-none-...whl`` -> ``bitsandbytes``)."""
    return _normal(filename.split("-", 1)[0])


def travel_bytes(repo: Path) -> int:
    """Bytes of what a device call sends: tracked and untracked-not-ignored files (``git ls-files``)."""
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


def wheelhouse_report(
    wheels: dict[str, int], tree_bytes: int, expected: list[str] | None = None, limit: int = LIMIT_BYTES
) -> dict[str, Any]:
    """Does a wheelhouse (file name -> bytes) travel with the working tree within ``limit``?

    ``problems`` lists what stops it: over the limit, a missing or a doubled distribution (two
    versions of one package stop the whole ``pip install``).
    """
    names = [wheel_name(f) for f in wheels]
    problems = []
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: more than one wheel; keep one version")
    for name in expected or []:
        if _normal(name) not in names:
            problems.append(f"{name}: no wheel")
    wheel_bytes = sum(wheels.values())
    total = wheel_bytes + tree_bytes
    if total > limit:
        problems.append(
            f"wheels {wheel_bytes / MIB:.1f} MiB + working tree {tree_bytes / MIB:.1f} MiB = "
            f"{total / MIB:.1f} MiB, over the {limit / MIB:.0f} MiB a device call carries"
        )
    return {
        "wheels": [{"file": f, "mib": round(b / MIB, 2)} for f, b in sorted(wheels.items(), key=lambda kv: -kv[1])],
        "wheels_mib": round(wheel_bytes / MIB, 2),
        "tree_mib": round(tree_bytes / MIB, 2),
        "total_mib": round(total / MIB, 2),
        "limit_mib": round(limit / MIB, 2),
        "margin_mib": round((limit - total) / MIB, 2),
        "fits": total <= limit and not problems,
        "problems": problems,
    }


def scan_wheelhouse(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.glob("*.whl"))}


def gpu_test_files(tests_dir: Path) -> list[Path]:
    """Test modules that hold gpu-marked tests: collecting only these keeps the run short and keeps a
    module that needs a package the machine lacks from failing collection."""
    return sorted(
        p for p in tests_dir.glob("test_*.py") if "pytest.mark.gpu" in p.read_text(encoding="utf-8", errors="replace")
    )


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts from pytest's ``--junitxml`` file, with each skip reason and each failure's first line."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    skipped: dict[str, int] = {}
    failures: list[str] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            counts["tests"] += 1
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            if (el := case.find("failure")) is not None:
                counts["failed"] += 1
                failures.append(
                    f"{name}: {(el.get('message') or '').splitlines()[0][:200] if el.get('message') else ''}"
                )
            elif (el := case.find("error")) is not None:
                counts["errors"] += 1
                failures.append(
                    f"{name}: {(el.get('message') or '').splitlines()[0][:200] if el.get('message') else ''}"
                )
            elif (el := case.find("skipped")) is not None:
                counts["skipped"] += 1
                reason = (el.get("message") or "").strip()
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                counts["passed"] += 1
    return {**counts, "skipped_reasons": skipped, "failures": failures}


# Usable memory of the card each profile is sized for (GiB as torch reports total_memory).
CARD_GIB = {"a100-80gb": 79.2, "h100-80gb": 79.2, "multi-gpu": 79.2, "a100-40gb": 39.4}


def bench_problems(bench: dict[str, Any], at_layers: int = 32) -> list[str]:
    """What the step benchmark says is wrong: a failed case, experts not in 4-bit, or a case whose
    peak read at 32 layers (reserved, as nvidia-smi roughly shows) exceeds its profile's card."""
    problems = []
    for row in bench.get("rows", []):
        where = f"{row['case']} at {row['layers']} layer(s)"
        if not row.get("ok"):
            problems.append(f"{where}: {row.get('error', 'failed')}")
        q = row.get("quantization") or {}
        if q.get("expert_tensors") and q.get("expert_tensors_4bit") != q.get("expert_tensors"):
            problems.append(
                f"{where}: {q.get('expert_tensors_4bit')} of {q.get('expert_tensors')} expert tensors in 4-bit"
            )
    for case, fit in (bench.get("fits") or {}).items():
        profile = case.split("/", 1)[-1]
        peak = fit.get("peak_reserved_gib") or fit.get("peak_gib") or {}
        card = CARD_GIB.get(profile)
        if card and peak.get("at_layers") == at_layers and peak.get("value_at", 0) > card:
            problems.append(
                f"{case}: peak read at {at_layers} layers is {peak['value_at']:.1f} GiB, "
                f"over the {card} GiB of the card the profile is sized for"
            )
    return problems


REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "started_at": str,
    "ended_at": (str, type(None)),
    "wall_s": (int, float, type(None)),
    "environment": dict,
    "tests": (dict, type(None)),
    "bench": (dict, type(None)),
    "ok": bool,
    "problems": list,
    "stages": dict,
}


def validate_summary(summary: dict[str, Any]) -> list[str]:
    """Schema problems of a ``gpu_check.json`` summary (empty when it is well formed)."""
    out = []
    for key, types in REQUIRED_KEYS.items():
        if key not in summary:
            out.append(f"{key}: missing")
        elif not isinstance(summary[key], types):
            out.append(f"{key}: expected {types}, got {type(summary[key]).__name__}")
    if summary.get("schema") not in (None, SUMMARY_SCHEMA) and "schema" in summary:
        out.append(f"schema: expected {SUMMARY_SCHEMA}")
    if isinstance(summary.get("tests"), dict):
        for key in ("passed", "failed", "errors", "skipped", "exit_status"):
            if key not in summary["tests"]:
                out.append(f"tests.{key}: missing")
    if isinstance(summary.get("bench"), dict):
        for i, row in enumerate(summary["bench"].get("rows", [])):
            for key in ("case", "layers", "ok", "peak_gib", "micro_batch_size", "sequence_len"):
                if key not in row:
                    out.append(f"bench.rows.{i}.{key}: missing")
    for name, stage in (summary.get("stages") or {}).items():
        if not isinstance(stage, dict) or stage.get("status") not in ("ok", "failed", "skipped", "running"):
            out.append(f"stages.{name}: status must be ok, failed, skipped or running")
    return out
