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
            built = "__pycache__" in path.parts or any(part.endswith(".egg-info") for part in path.parts)
            if path.is_file() and path.suffix in SUFFIXES and not built:
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
        re.compile(
            r"can_start_another|\bdevice time\b|\bdevice tool\b|\brun\(command=|\bissues show\b|\bduplicates src\b",
            re.I,
        ),
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
        re.compile(
            r"\b\d[\d,]* (?:fast |slow )?tests\b(?! (?:of|in|for|that|which|where|with))|\b\d[\d,]* passed\b", re.I
        ),
    ),
]

# `#N`: a reference to mixft's own tracker, unless it names another project's (`vllm#17199`,
# `Axolotl PR #602`, `PRs #602/#708`, `Chinese-Mixtral #16`, `transformers #28339`) or is a colour.
_HASH_REF = re.compile(r"(?<![\w/&#])#(\d{1,4})(?![\w.])")
_UPSTREAM_WORD = re.compile(r"(?:[A-Z][\w.-]*|[\w.-]+/[\w.-]+|PRs?|pull|issues?|transformers|peft|vllm|axolotl)[,:]?$")


def _names_another_project(words: list[str]) -> bool:
    """The words before `#N` name another project's tracker: `Axolotl PR`, `Axolotl issue`, `Chinese-Mixtral`."""
    if not words:
        return False
    if words[-1].lower().rstrip(",:") in {"issue", "issues"}:
        return len(words) > 1 and bool(_UPSTREAM_WORD.search(words[-2]))
    return bool(_UPSTREAM_WORD.search(words[-1]))


def _tracker_reference(line: str) -> str | None:
    for m in _HASH_REF.finditer(line):
        if len(m.group(1)) == 3 and re.search(r"colou?r|background|border", line, re.I):
            continue  # a CSS colour such as #333
        if _names_another_project(line[: m.start()].split()):
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


# ----------------------------------------------------------------------------- references to the docs

# `docs/NAME.md, "Heading"`, `docs/NAME.md, *Heading*` and `docs/formats.md §N` / `section N`: a page of
# mixft's own docs (not `docs/features/lora.md` of another project) and, where named, one of its headings.
_DOC_REF = re.compile(
    r"(?<![\w/.-])(docs/(?:design/)?[\w-]+\.md)"
    r"(?:,\s*(?:\"([^\"\n]+)\"|\*([^*\n]+)\*)|\s*(?:§|section )(\d+))?"
)


# The GPU check's note arrives with the GPU check's own changes; until it is in the tree, links to it
# are not counted as broken (once it is, they are checked like every other page).
ADDED_WITH_THEIR_CODE = {"docs/design/gpu-check.md"}


def doc_references(repo: Path = REPO) -> list[tuple[str, str, str | None]]:
    """(where, page, heading or section number) for every reference to a page of docs/."""
    here = Path(__file__).resolve()
    tests = [p for p in sorted((repo / "tests").rglob("*.py")) if p.resolve() != here]
    files = [*scanned_files(repo), *tests, repo / "Makefile"]
    refs = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace").replace("\\\n", " ")
        for n, line in enumerate(text.splitlines(), 1):
            for m in _DOC_REF.finditer(line):
                section = m.group(2) or m.group(3) or m.group(4)
                refs.append((f"{path.relative_to(repo)}:{n}", m.group(1), section))
    return refs


def _headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("#")]


def reference_problems(refs, repo: Path = REPO) -> list[str]:
    problems = []
    for where, page, section in refs:
        target = repo / page
        if not target.exists():
            if page not in ADDED_WITH_THEIR_CODE:
                problems.append(f"{where}: {page}: no such page")
            continue
        if section is None:
            continue
        headings = [h.replace("`", "").lower() for h in _headings(target)]
        wanted = section.replace("`", "").lower().strip()
        if section.isdigit():
            found = any(h.startswith(f"{section}.") for h in headings)
        else:
            found = any(h.startswith(wanted) or wanted in h for h in headings)
        if not found:
            problems.append(f"{where}: {page} has no heading {section!r}")
    return problems


def test_every_reference_to_a_doc_page_and_heading_resolves():
    refs = doc_references()
    assert len(refs) > 100  # the scan finds the references it is for
    problems = reference_problems(refs)
    assert not problems, "references to pages or headings that do not exist:\n" + "\n".join(problems)


def test_the_reference_check_catches_what_it_should(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Run states\n\n## 3. Responses to check\n")
    refs = [
        ("x:1", "docs/a.md", "Run states"),
        ("x:2", "docs/a.md", "3"),
        ("x:3", "docs/a.md", "Router auxiliary loss"),
        ("x:4", "docs/a.md", "4"),
        ("x:5", "docs/b.md", None),
    ]
    assert reference_problems(refs, tmp_path) == [
        "x:3: docs/a.md has no heading 'Router auxiliary loss'",
        "x:4: docs/a.md has no heading '4'",
        "x:5: docs/b.md: no such page",
    ]
