"""The docs, configs, pipelines, scripts and library speak of the product only: no tracker issue
numbers, no names of development branches, no words about who built mixft on which machine or
which GPUs its builders had, no calls of tools only its builders have, no test counts that go
stale, no absolute paths of a build machine. Every hit is reported as ``file:line: what: text``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = {".md", ".py", ".yml", ".yaml", ".json", ".txt", ".toml", ".cfg", ".sh", ".xml", ".html", ".css", ""}


def scanned_files(repo: Path = REPO) -> list[Path]:
    """README.md, docs/**/*.md and the text files under configs/, pipelines/, scripts/ and src/."""
    files = [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]
    for top in ("configs", "pipelines", "scripts", "src"):
        for path in sorted((repo / top).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return [f for f in files if f.is_file()]


# Names of the branches mixft was developed on. The unusual ones are never ordinary words; the others
# (plan, report, label, ...) are words of the product too, so they count only next to "branch".
_BRANCH_ONLY = r"ax021|gpu19|traincli|plan-points|plan-fix|gpu-infer|gpu-models|gpu-train|eval-corr"
_BRANCH_WORDS = (
    r"ax021|layout|prepare|report|traincli|plan|label|pipeline|gpu19|hygiene|gpucheck|docs|testspeed|"
    r"types|reliability|refactor|plan-points|plan-fix|gpu-infer|gpu-models|gpu-train|eval-corr|main"
)

RULES: list[tuple[str, re.Pattern[str]]] = [
    ("an issue number", re.compile(r"\bissues?[ -]\d+\b|\bitem \d+ of issue\b", re.I)),
    ("a development stop", re.compile(r"\bstop \d+\b", re.I)),
    ("a branch name", re.compile(rf"(?<![\w-])(?:{_BRANCH_ONLY})(?![\w-])")),
    (
        "a branch name",
        re.compile(
            rf"\bbranch(?:es)?\s+[`'\"]?(?:{_BRANCH_WORDS})\b|(?:[`'\"]|\bthe\s+)(?:{_BRANCH_WORDS})[`'\"]?\s+branch\b"
            rf"|\bmerged?\s+(?:into|from)\s+[`'\"]?(?:{_BRANCH_WORDS})\b",
            re.I,
        ),
    ),
    ("a lent machine", re.compile(r"\blent\b", re.I)),
    (
        "a builder's tool",
        re.compile(r"can_start_another|\bdevice time\b|\bdevice tool\b|\brun\(command=|\bissues show\b|\bduplicates src\b", re.I),
    ),
    ("a build-machine path", re.compile(r"(?<![\w.])/(?:work|root)/")),
    (
        "words about how mixft was built",
        re.compile(
            r"sessions? that built|this project is built on|the build machine|other engineers|"
            r"built mixft|the machine (?:mixft|this project) (?:is|was) built on|"
            r"no GPU (?:was|has been|is) (?:lent|available)|no GPU run has been made|"
            r"for lack of time on the shared machine|the shared \d-core machine",
            re.I,
        ),
    ),
    (
        "a test count",
        re.compile(r"\b\d[\d,]* (?:fast |slow )?tests\b(?! (?:of|in|for|that|which|where|with))|\b\d[\d,]* passed\b", re.I),
    ),
]

# `#N`: a reference to mixft's own tracker, unless it names another project's (`vllm#17199`,
# `Axolotl PR #602`, `PRs #602/#708`, `Chinese-Mixtral #16`, `transformers #28339`) or is a colour.
_HASH_REF = re.compile(r"(?<![\w/&#])#(\d{1,4})(?![\w.])")
_UPSTREAM_WORD = re.compile(r"(?:[A-Z][\w.-]*|[\w.-]+/[\w.-]+|PRs?|pull|issues?|transformers|peft|vllm|axolotl)[,:]?$")


def _tracker_reference(line: str) -> str | None:
    for m in _HASH_REF.finditer(line):
        before = line[: m.start()].rstrip().split()
        if len(m.group(1)) == 3 and re.search(r"colou?r|background|border", line, re.I):
            continue  # a CSS colour such as #333
        if before and _UPSTREAM_WORD.search(before[-1]) and (before[-1].lower() not in {"issue", "issues"} or len(before) > 1 and _UPSTREAM_WORD.search(before[-2])):
            continue
        return m.group(0)
    return None


def problems_in(path: Path, text: str, repo: Path = REPO) -> list[str]:
    rel = path.relative_to(repo)
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in RULES:
            m = pattern.search(line)
            if m:
                found.append(f"{rel}:{n}: {what} ({m.group(0)!r}): {line.strip()[:160]}")
        ref = _tracker_reference(line)
        if ref:
            found.append(f"{rel}:{n}: a tracker reference ({ref!r}): {line.strip()[:160]}")
    return found


def test_the_docs_and_the_product_speak_of_the_product_only():
    problems = []
    for path in scanned_files():
        problems += problems_in(path, path.read_text(encoding="utf-8", errors="replace"))
    assert not problems, "development-process words, machine paths or stale counts:\n" + "\n".join(problems)


def test_the_scan_covers_every_place_it_names():
    rels = {str(p.relative_to(REPO)) for p in scanned_files()}
    assert "README.md" in rels
    for top in ("docs/", "docs/design/", "configs/", "pipelines/", "scripts/", "src/mixtral_ft/"):
        assert any(r.startswith(top) and r.count("/") == top.count("/") for r in rels), top


@pytest.mark.parametrize(
    "line,what",
    [
        ("Fixed in issue 12, item 3.", "an issue number"),
        ("Benchmark for the issue-5 targets", "an issue number"),
        ("see #12 for the discussion", "a tracker reference"),
        ("as asked in issue #17", "a tracker reference"),
        ("# gpu-infer: the loader reports it", "a branch name"),
        ("fixed on the gpucheck branch", "a branch name"),
        ("the work of stop 15", "a development stop"),
        ("merged from the ax021 branch", "a branch name"),
        ("on branch `plan` the goldens changed", "a branch name"),
        ("the `layout` branch moved it", "a branch name"),
        ("No GPU has been lent to the sessions that built mixft", "a lent machine"),
        ("the device tool's status: can_start_another: false", "a builder's tool"),
        ("on the 2-core machine this project is built on", "words about how mixft was built"),
        ("No GPU was available here.", "words about how mixft was built"),
        ("make test passes 823 tests from a fresh clone", "a test count"),
        ("then 812 passed in 9:41", "a test count"),
        ("RAGTruth lives in /work/shared/datasets", "a build-machine path"),
        ("a copy in /root/.cache", "a build-machine path"),
    ],
)
def test_the_scan_catches_what_it_should(line, what):
    got = problems_in(REPO / "docs" / "x.md", line + "\n")
    assert got and any(f": {what} (" in g for g in got), got


@pytest.mark.parametrize(
    "line",
    [
        "vllm-project/vllm#17199 reports it and is open",
        "the report's colours, #1f77b4 and #333",
        "Axolotl example READMEs, PRs #602/#708, Axolotl issue #998",
        "transformers #28339, HIT-SCIR Chinese-Mixtral #16",
        "from bench.gpucheck import parse_junit",
        "`mixft plan` plans every stage; `mixft report` writes report.md",
        "one plan per stage, and the code's other branch for a report",  # "branch" not naming a branch
        "the tests of `tests/test_plan_golden.py` check every pair",
        "a 2-core, 24 GB CPU VM",
        "mixft prepare rg data/sample_qa.jsonl --out runs/rg-data --test-size 60",
        "| 100,100 rows, 230 MiB | 3.8 s |",
        "docs/design/gpu-check.md says how the check is built",
        "A slow test installs the wheel in a fresh venv.",
    ],
)
def test_the_scan_leaves_product_words_alone(line):
    assert problems_in(REPO / "docs" / "x.md", line + "\n") == []
