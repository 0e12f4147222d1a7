"""`mixft --help` stays light: it lists every command, in pipeline order, without importing any
command module, rich, or anything heavy; a command's module is imported when that command is used.
(The time itself is measured by scripts/bench_cli.py, not asserted here.) The light commands stay
light as well: run as `mixft` runs them, none imports torch, transformers or the rest of the model
stack (tests/test_import_graph.py checks the imports that keep them off)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer.main

from mixtral_ft import cli
from mixtral_ft.cli.main import COMMANDS, app, main
from support.heavy import MODEL_STACK

HEAVY = ("torch", "transformers", "datasets", "pyarrow", "axolotl", "numpy", "rich")
# What a light command must not import: the model stack, and the packages only some inputs or
# backends need (Parquet input; an HTTP server).
NOT_LIGHT = (*MODEL_STACK, "pyarrow", "httpx")
REPO = Path(__file__).resolve().parents[1]
LABEL_DATA = REPO / "tests" / "data" / "label"

# Run mixft as the `mixft` executable does (cli.entry), then report what was imported.
_RUN = """
import json, runpy, sys
sys.argv = ["mixft", *sys.argv[1:]]
try:
    runpy.run_module("mixtral_ft.cli", run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run_mixft(*args: str) -> tuple[int, str, set[str]]:
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stderr.splitlines()[-1])
    return report["code"], proc.stdout, set(report["modules"])


def commands_section(help_text: str) -> list[tuple[str, str]]:
    lines = help_text.split("\nCommands:\n", 1)[1].splitlines()
    return [(line.split(maxsplit=1)[0], line.split(maxsplit=1)[1]) for line in lines if line.strip()]


def test_help_lists_every_command_in_pipeline_order_and_imports_none_of_them():
    code, out, modules = run_mixft("--help")
    assert code == 0
    assert out.startswith("Usage: mixft [OPTIONS] COMMAND [ARGS]...")
    assert commands_section(out) == [(e.name, e.summary) for e in COMMANDS]
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []
    assert [m for m in modules if m.startswith("mixtral_ft.cli.") and m.endswith("_cmd")] == []


def test_a_command_imports_its_own_module_only():
    code, out, modules = run_mixft("merge", "--help")
    assert code == 0 and out.startswith("Usage: mixft merge [OPTIONS] RUN_DIR")
    commands = {m for m in modules if m.startswith("mixtral_ft.cli.") and m.endswith("_cmd")}
    assert commands == {"mixtral_ft.cli.merge_cmd"}
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []


def test_every_command_module_has_one_entry_that_builds_its_command():
    """A new command module is one line in COMMANDS; one left out of the table would be unreachable."""
    modules = {m.name for m in pkgutil.iter_modules(cli.__path__) if m.name.endswith("_cmd")}
    # prepare registers tc itself
    assert {e.module for e in COMMANDS} == {f"mixtral_ft.cli.{m}" for m in modules - {"prepare_tc_cmd"}}
    assert len({e.name for e in COMMANDS}) == len(COMMANDS)
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    ctx = click.Context(root)
    for entry in COMMANDS:
        command = root.get_command(ctx, entry.name)
        assert command is not None and command.name == entry.name
        # the line of `mixft --help` is the command's short help once loaded, too
        assert command.get_short_help_str(limit=200) == entry.summary
        assert importlib.import_module(entry.module) is not None
    assert root.list_commands(ctx) == [e.name for e in COMMANDS]


def test_help_text_of_each_command_is_plain(capsys):
    """Plain click help everywhere: no rich box drawing, for the root and every command."""
    for args in ([], *([e.name] for e in COMMANDS)):
        assert main([*args, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"Usage: mixft {' '.join(args)}".rstrip() + " ")
        assert not set("╭╮╰╯│─") & set(out)


def test_unknown_command_is_refused_with_one_suggestion(capsys):
    assert main(["generat"]) == 2
    err = capsys.readouterr().err
    assert err.count("Did you mean 'generate'?") == 1 and "No such command 'generat'." in err
    assert main(["plan", "rgg"]) == 2
    assert capsys.readouterr().err.count("Did you mean 'rg'?") == 1


def test_no_arguments_shows_the_help_on_stdout(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("Usage: mixft [OPTIONS] COMMAND [ARGS]...") and captured.err == ""
    assert main(["prepare", "rg"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("Usage: mixft prepare rg [OPTIONS] INPUT...") and captured.err == ""


def test_help_of_positional_arguments_is_shown(capsys):
    """Each positional argument's help reaches --help (typer 0.25 with click 8.5 loses it: the
    reason for pyproject's click < 8.5)."""
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "RUN_DIRS...  mixft eval --out dirs and/or training run dirs, any mix." in out


def _light_runs(tmp_path: Path) -> dict[str, list[str]]:
    prepared = tmp_path / "prepared"
    return {
        "prepare rg": ["prepare", "rg", str(REPO / "data" / "sample_qa.jsonl"), "--out", str(prepared)],
        # Axolotl's validate_config is what --no-validate leaves out; the key check reads the snapshot
        "config render": [
            "config",
            "render",
            "rg",
            "--data",
            str(prepared),
            "--profile",
            "cpu",
            "--no-validate",
            "--out",
            str(tmp_path / "axolotl.yml"),
        ],
        "label sample": [
            "label",
            "sample",
            str(LABEL_DATA / "population.jsonl"),
            "--n",
            "10",
            "--out",
            str(tmp_path / "s"),
        ],
        "eval rg": ["eval", "rg", "--verdicts", str(LABEL_DATA / "judge.jsonl"), "--out", str(tmp_path / "eval")],
        "report": ["report", str(tmp_path / "eval"), "--out", str(tmp_path / "report")],
        "plan (warm)": ["plan", "rg", "--profile", "a100-80gb", "--json"],
    }


def test_light_commands_import_no_model_stack(tmp_path, warm_cache):
    """Each command in a fresh interpreter, in pipeline order (config render reads the prepared split,
    report the eval output); a warm plan reads the checked-in measurements ($MIXFT_CACHE)."""
    imported = {}
    for name, args in _light_runs(tmp_path).items():
        code, _, modules = run_mixft(*args)
        assert code == 0, name
        imported[name] = sorted({m.split(".")[0] for m in modules} & set(NOT_LIGHT))
    assert imported == dict.fromkeys(imported, [])


@pytest.mark.slow
def test_endpoint_generate_and_judge_import_no_model_stack(openai_server, tmp_path):
    """`--backend openai` talks HTTP (httpx) and needs no model in-process."""
    data = tmp_path / "test.jsonl"
    row = {"id": "q1", "source": "s", "group": "g1", "context": "Paris is in France.", "question": "Where is Paris?"}
    data.write_text(json.dumps({**row, "answer": "In France."}) + "\n", encoding="utf-8")
    endpoint = ["-m", openai_server.model, "--backend", "openai", "--base-url", openai_server.ensure_up().base_url]
    runs = {
        "generate": ["generate", "--data", str(data), "--out", str(tmp_path / "gen.jsonl"), "--max-new-tokens", "4"],
        "judge": [
            "judge",
            "--responses",
            str(tmp_path / "gen.jsonl"),
            "--out",
            str(tmp_path / "j.jsonl"),
            "--max-new-tokens",
            "8",
        ],
    }
    for name, args in runs.items():
        code, _, modules = run_mixft(*args, *endpoint)
        assert code == 0, name
        assert sorted({m.split(".")[0] for m in modules} & set(MODEL_STACK)) == [], name
        assert "httpx" in modules, name
