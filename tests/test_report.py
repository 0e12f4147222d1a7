"""`mixft report` over real eval result dirs and a training run dir with Axolotl's trainer_state.json."""

from __future__ import annotations

import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main
from mixtral_ft.report.render import Block, md_literal, to_html, to_markdown


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def make_run_dir(root: Path) -> Path:
    """A run dir as `mixft train` lays it out: axolotl.yml whose output_dir holds checkpoints."""
    run = root / "run-rg"
    out = run / "output"
    history = [{"step": s, "loss": 2.0 / s, "epoch": s / 10} for s in range(1, 11)]
    history += [{"step": s, "eval_loss": 2.2 / s} for s in (5, 10)]
    for step, hist in ((5, history[:5]), (10, history)):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"log_history": hist}))
    (run / "axolotl.yml").write_text(f"base_model: tiny\noutput_dir: {out}\n")
    return run


def test_report_from_eval_dirs_and_train_run(tmp_path, capsys):
    gold = write(tmp_path / "gold.jsonl", [{"id": f"i{k}", "hallucinated": k < 3} for k in range(20)])
    gen = write(
        tmp_path / "verdicts.jsonl", [{"id": f"i{k}", "model": "ft", "hallucinated": k in (0, 5)} for k in range(20)]
    )
    checker = write(
        tmp_path / "checker.jsonl",
        [
            {"id": f"i{k}", "hallucinated": k in (0, 1, 7), "score": (0.9 if k in (0, 1, 7) else k / 40)}
            for k in range(20)
        ],
    )
    assert main(["eval", "rg", "--verdicts", str(gen), "--out", str(tmp_path / "e_rg"), "--label", "ft"]) == 0
    assert (
        main(
            [
                "eval",
                "tc",
                "--pred",
                str(checker),
                "--gold",
                str(gold),
                "--out",
                str(tmp_path / "e_tc"),
                "--label",
                "ft",
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
                "--out",
                str(tmp_path / "e_pipe"),
                "--label",
                "ft",
            ]
        )
        == 0
    )
    assert main(["eval", "compare", str(gold), str(gen), "--out", str(tmp_path / "e_cmp")]) == 0
    run = make_run_dir(tmp_path)
    capsys.readouterr()
    out = tmp_path / "report"
    dirs = [str(tmp_path / d) for d in ("e_rg", "e_tc", "e_pipe", "e_cmp")] + [str(run)]
    assert main(["report", *dirs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ft" in printed and "10.0%" in printed  # hallucination rate 2/20

    for name in ("loss_curves.png", "hallucination_rates.png", "tc_accuracy.png", "risk_coverage.png"):
        w, h = png_size(out / name)
        assert w >= 600 and h >= 200, name
    md = (out / "report.md").read_text()
    assert (
        "| Model | Hallucination rate (as judged) | Corrected for the judge's error | TC accuracy | "
        "Net hallucination rate (at rejection rate) |"
    ) in md
    # hallucination 2/20, TC accuracy: gold i0-i2, flags i0,i1,i7 -> 18/20; net: i2 accepted -> 1/20 at 3/20
    assert (
        "| ft | 10.0% [2.8%, 30.1%] (2/20) | not corrected (no --checker-eval: the judge's error was not "
        "measured) | 90.0% [69.9%, 97.2%] (18/20) | 5.0% "
    ) in md
    assert "at 15.0% rejection |" in md
    assert "![loss_curves.png](loss_curves.png)" in md and "## Paired comparisons" in md
    assert "checkpoint-10" in md and "| run-rg | 10 | 0.2000 | 0.2200 |" in md
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and '<img src="risk_coverage.png"' in html
    # report.html is report.md rendered: code spans are code, no Markdown shows, one <table> per table
    assert "Hallucination rate from <code>mixft eval rg</code>" in html and "`" not in html
    assert html.count("<table>") == len(re.findall(r"^\| ---( \| ---)* \|$", md, flags=re.M)) == 8
    data = json.loads((out / "report.json").read_text())
    assert data["runs"][0]["train_loss"][0] == [1, 2.0]


def test_report_rejects_unknown_dirs_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "neither an eval result dir" in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"]


def test_trainer_state_in_run_dir_itself(tmp_path):
    from mixtral_ft.report.sources import discover

    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.5}, {"step": 2}]}))
    evals, runs = discover([run])
    assert evals == [] and runs[0].train_loss == [(1, 1.5)] and runs[0].eval_loss == []


class _Page(HTMLParser):
    """What an HTML page shows: its text by element, and the tags it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.cells: list[str] = []
        self.paragraphs: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("td", "th", "p"):
            (self.cells if tag != "p" else self.paragraphs).append("")
            self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open and tag == self._open[-1]:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            target = self.paragraphs if self._open[-1] == "p" else self.cells
            target[-1] += data


def shown(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


HOSTILE = [
    "<script>alert(1)</script>",
    '<img src="x" onerror="alert(1)">',
    "<http://example.invalid>",
    "<!-- hidden -->",
    "**bold** *em* _em_ __strong__",
    "`code` ``two``",
    "[link](http://example.invalid) ![image](x.png) [ref][1]",
    "a | b \\| c \\",
    "back\\slash \\* \\_ \\`",
    "&amp; &#60; &lt;b&gt;",
    "~~strike~~",
    "# not a heading",
    "- not a list",
    "1. not a list",
    "> not a quote",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_from_the_inputs_shows_as_written(text):
    """md_literal + the Markdown renderer: a label shows as its own text, in a table and in a paragraph,
    and never becomes markup (no tag, link, image, code or emphasis)."""
    blocks = [Block("table", headers=["label"], rows=[[text]]), Block("p", "Label: " + md_literal(text))]
    page = shown(to_html(to_markdown(blocks)))
    assert page.cells == ["label", text]
    assert page.paragraphs == ["Label: " + text]
    assert [t for t, _ in page.tags if t not in ("html", "head", "meta", "title", "style", "body")] == [
        "h1", "table", "thead", "tr", "th", "tbody", "tr", "td", "p",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["ft [rg]", "/tmp/run_1/e_rg", "10.0% [2.8%, 30.1%] (2/20)", "gold \\ prediction", "x > y", "AT&T", "B - A [CI]"],
)
def test_plain_text_is_not_escaped(text):
    """What Markdown would show as written anyway stays byte for byte, so report.md reads as before."""
    assert md_literal(text) == text


def test_hostile_labels_show_as_text_in_the_report(tmp_path):
    gold = write(tmp_path / "gold.jsonl", [{"id": f"i{k}", "hallucinated": k < 5} for k in range(20)])
    checker = write(tmp_path / "checker.jsonl", [{"id": f"i{k}", "hallucinated": k in (0, 1, 9)} for k in range(20)])
    rg_label, tc_label = "<script>alert(1)</script>", "<img src=x onerror=alert(1)> [x](y) **z**"
    assert main(["eval", "rg", "--verdicts", str(checker), "--label", rg_label, "--out", str(tmp_path / "rg")]) == 0
    tc = ["eval", "tc", "--pred", str(checker), "--gold", str(gold), "--label", tc_label, "--out", str(tmp_path / "tc")]
    assert main(tc) == 0
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "rg"), str(tmp_path / "tc"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| \\<script>alert(1)\\</script> |" in md  # escaped, so it reads as written in any Markdown viewer
    assert "| \\<img src=x onerror=alert(1)> [x\\](y) \\*\\*z\\*\\* |" in md
    page = shown((out / "report.html").read_text())
    assert rg_label in page.cells and tc_label in page.cells
    assert [t for t, _ in page.tags if t in ("script", "a", "strong")] == []
    assert [a["src"] for t, a in page.tags if t == "img"] == ["hallucination_rates.png", "tc_accuracy.png"]
