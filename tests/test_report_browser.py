"""report.html in a real headless Chromium: every image loads, no console error, every table of
report.md is a table, no Markdown syntax shows, and labels cannot inject markup.

Needs Debian's `chromium` and `chromium-driver` (CI installs them in .ci/run) and the `selenium`
package (the `dev` extra); without them the test is skipped and says what is missing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError:  # pragma: no cover - depends on the environment
    webdriver = None

pytestmark = [
    pytest.mark.skipif(webdriver is None, reason="selenium is not installed (pip install 'mixtral-ft[dev]')"),
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)",
    ),
]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A report with every section and plot: rg (corrected), tc, pipeline with scores, compare, training run."""
    tmp = tmp_path_factory.mktemp("browser")
    judge = {"backend": "hf", "model": "judge", "adapter": "tc", "prompt_sha256": "a" * 64}
    gold = write(tmp / "gold.jsonl", [{"id": f"i{k}", "hallucinated": k < 8} for k in range(40)])
    checker = write(
        tmp / "checker.jsonl",
        [
            {
                "id": f"i{k}",
                "hallucinated": k in (0, 1, 2, 3, 4, 5, 30),
                "score": 0.9 if k < 6 else k / 50,
                "judge": judge,
            }
            for k in range(40)
        ],
    )
    answers = write(
        tmp / "answers.jsonl",
        [{"id": f"a{k}", "model": "ft", "hallucinated": k % 7 == 0, "judge": judge} for k in range(60)],
    )
    raw = write(
        tmp / "raw.jsonl",
        [{"id": f"a{k}", "model": "raw", "hallucinated": k % 4 == 0, "judge": judge} for k in range(60)],
    )
    assert (
        main(["eval", "tc", "--pred", str(checker), "--gold", str(gold), "--out", str(tmp / "tc"), "--label", "ft"])
        == 0
    )
    assert (
        main(
            [
                "eval",
                "rg",
                "--verdicts",
                str(answers),
                "--checker-eval",
                str(tmp / "tc"),
                "--label",
                "ft",
                "--out",
                str(tmp / "rg"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "eval",
                "pipeline",
                "--gold",
                str(gold),
                "--checker",
                str(checker),
                "--label",
                "ft",
                "--out",
                str(tmp / "pipe"),
            ]
        )
        == 0
    )
    assert (
        main(["eval", "compare", str(raw), str(answers), "--checker-eval", str(tmp / "tc"), "--out", str(tmp / "cmp")])
        == 0
    )
    run = tmp / "run"
    (run / "output").mkdir(parents=True)
    history = [{"step": s, "loss": 2.0 / s} for s in range(1, 6)] + [{"step": 5, "eval_loss": 0.5}]
    (run / "output" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    out = tmp / "report"
    assert main(["report", *(str(tmp / d) for d in ("rg", "tc", "pipe", "cmp", "run")), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver, html: Path) -> dict:
    """Load a file and read what a person would see: images (loaded or not), tables, console errors."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(html.as_uri())
    page = driver.execute_script("""
        return {
          title: document.title,
          images: Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                                          width: i.naturalWidth})),
          tables: Array.from(document.querySelectorAll('table')).map(t => ({
              headers: Array.from(t.querySelectorAll('th')).map(h => h.textContent),
              rows: t.querySelectorAll('tbody tr').length})),
          h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
          text: document.body.innerText,
          scripts: document.scripts.length,
          links: document.links.length,
          pwned: window.pwned === undefined ? null : String(window.pwned),
        };""")
    page["errors"] = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return page


def test_report_html_opens_with_every_image_and_table(report_dir, browser):
    page = open_page(browser, report_dir / "report.html")
    assert page["title"] == "mixft report"
    assert page["errors"] == []
    srcs = sorted(i["src"] for i in page["images"])
    assert srcs == ["hallucination_rates.png", "loss_curves.png", "risk_coverage.png", "tc_accuracy.png"]
    assert all(i["complete"] and i["width"] > 0 for i in page["images"]), page["images"]
    assert page["h2"][:2] == ["Summary", "Hallucination rates"] and "Paired comparisons" in page["h2"]
    headers = [t["headers"] for t in page["tables"]]
    assert [
        "Model",
        "Hallucination rate (as judged)",
        "Corrected for the judge's error",
        "TC accuracy",
        "Net hallucination rate (at rejection rate)",
    ] in headers
    assert all(t["rows"] >= 1 for t in page["tables"]) and len(page["tables"]) >= 6
    md_tables = re.findall(r"^\| ---( \| ---)* \|$", (report_dir / "report.md").read_text(), flags=re.M)
    assert len(page["tables"]) == len(md_tables)  # every table of report.md renders as a <table>
    assert markdown_syntax(page["text"]) == [], page["text"]
    assert "from mixft eval rg: the share" in page["text"] and "(--checker-eval)" in page["text"]


MARKDOWN_SYNTAX = {
    "backtick": r"`",
    "strong": r"\*\*",
    "table rule": r"\|\s*-{3,}",
    "link or image": r"\]\(",
    "heading": r"(?m)^#{1,6} ",
    "escape": r"\\[!-/:-@\[-`{-~]",
}


def markdown_syntax(text: str) -> list[str]:
    """The kinds of Markdown syntax that show in ``text`` (what a reader would see raw)."""
    return [name for name, pattern in MARKDOWN_SYNTAX.items() if re.search(pattern, text)]


def test_the_syntax_check_sees_markdown():
    """The check above can fail: it finds each kind in text that shows it raw."""
    raw = "from `mixft eval rg` **x** | --- | [a](b) \\_y\n## Summary"
    assert markdown_syntax(raw) == list(MARKDOWN_SYNTAX)
    assert markdown_syntax("95.0% [80.0%, 99.1%] (19/20) — B - A [CI]; p < 0.05 | x_y") == []


HOSTILE = {
    "rg": "<script>window.pwned = 1</script>",
    "tc": '<img src="x.png" onerror="window.pwned = 2">',
    "pipe": "[click](http://example.invalid/) ![i](x.png) **loud** `code` <http://example.invalid>",
}


def test_labels_show_as_text_and_inject_nothing(browser, tmp_path):
    """A label can hold anything: the page shows it as written and runs, loads or links nothing of it."""
    gold = write(tmp_path / "gold.jsonl", [{"id": f"i{k}", "hallucinated": k < 5} for k in range(20)])
    checker = write(tmp_path / "checker.jsonl", [{"id": f"i{k}", "hallucinated": k in (0, 1, 9)} for k in range(20)])
    argv = {
        "rg": ["eval", "rg", "--verdicts", str(checker)],
        "tc": ["eval", "tc", "--pred", str(checker), "--gold", str(gold)],
        "pipe": ["eval", "pipeline", "--gold", str(gold), "--checker", str(checker)],
    }
    for name, args in argv.items():
        assert main([*args, "--label", HOSTILE[name], "--out", str(tmp_path / name)]) == 0
    out = tmp_path / "report"
    assert main(["report", *(str(tmp_path / name) for name in argv), "--out", str(out)]) == 0
    page = open_page(browser, out / "report.html")
    assert page["errors"] == [] and page["pwned"] is None
    assert page["scripts"] == 0 and page["links"] == 0
    assert sorted(i["src"] for i in page["images"]) == ["hallucination_rates.png", "tc_accuracy.png"]
    for label in HOSTILE.values():
        assert label in page["text"]


def test_the_check_sees_a_missing_image(report_dir, browser, tmp_path):
    """The same page with one plot gone: the browser reports it, so the test above can fail."""
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken)
    (broken / "tc_accuracy.png").unlink()
    page = open_page(browser, broken / "report.html")
    missing = [i for i in page["images"] if i["width"] == 0]
    assert [i["src"] for i in missing] == ["tc_accuracy.png"]
    assert any("tc_accuracy.png" in e["message"] for e in page["errors"]), page["errors"]
