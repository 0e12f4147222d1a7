"""The CLI lists its choices: fixed sets of values are Enums / Choices that `--help` shows and the
parser refuses; profiles come from the configs folder; `mixft prepare FILE` explains itself;
every command module registers the same way; `config list|copy|show`."""

from __future__ import annotations

import json
import re

import pytest
import typer

from mixtral_ft.choices import Backend, IntervalMethod, values
from mixtral_ft.cli.main import app, main


def help_text(capsys, monkeypatch, *args: str) -> str:
    assert main([*args, "--help"]) == 0
    return capsys.readouterr().out


def param(path: list[str], name: str):
    """The click parameter ``name`` of the command at ``path`` (e.g. ["prepare", "rg"])."""
    import click

    cmd = typer.main.get_command(app)
    ctx = click.Context(cmd)
    for part in path:
        cmd = cmd.get_command(ctx, part)
    return next(p for p in cmd.params if p.name == name)


def test_every_choice_that_names_an_implementation_has_one():
    """Backends and interval methods are looked up by the choice's value; the demo's models are checked
    in tests/test_pipeline.py (the presets of demo-cpu.yml). The other choices are the library's only list of their values."""
    from mixtral_ft.backends import available_backends
    from mixtral_ft.eval.stats import INTERVAL_METHODS

    assert sorted(values(Backend)) == available_backends()
    assert list(INTERVAL_METHODS) == list(values(IntervalMethod))


@pytest.mark.parametrize(
    "path,option,listed",
    [
        (["prepare", "rg"], "--format", "[jsonl|json|csv|parquet]"),
        (["prepare", "tc"], "--format", "[jsonl|json|csv|parquet|ragtruth]"),
        (["prepare", "tc"], "--corrections", "[input|from-clean]"),
        (["eval", "pipeline"], "--unparsed", "[reject|accept]"),
        (["train", "rg"], "--profile", "[a100-40gb|a100-80gb|cpu|h100-80gb|multi-gpu]"),
        (["config", "render"], "--profile", "[a100-40gb|a100-80gb|cpu|h100-80gb|multi-gpu]"),
        (["config", "render"], "TASK:{rg|tc}", "TASK:{rg|tc}"),
        (["generate"], "--prompt", "[rg|chat]"),
        (["generate"], "--backend", "[hf|openai]"),
        (["generate"], "--endpoint-mode", "[completions|chat]"),
        (["judge"], "--prompt", "[tc|chat]"),
        (["judge"], "--backend", "[hf|openai]"),
        (["plan", "generate"], "--prompt", "[rg|chat]"),
        (["plan", "rg"], "--gpu", "[a100-40gb|a100-80gb|h100-80gb|h200|l40s|rtx-4090|a10g]"),
        (["plan", "judge"], "--prompt", "[tc|chat]"),
        (["eval", "rg"], "--interval", "[wilson|"),
    ],
)
def test_help_lists_the_choices(capsys, monkeypatch, path, option, listed):
    # the row of the option (or the argument's metavar), not the examples; click never wraps
    # that first column, so the choices are on the row whatever the width
    row = re.compile(rf"\s+(-\w, )?{re.escape(option)}(?= |$)")
    rows = [line for line in help_text(capsys, monkeypatch, *path).splitlines() if row.match(line)]
    assert len(rows) == 1 and listed in rows[0]


def test_bad_choices_are_refused_by_the_parser(tmp_path, capsys):
    assert main(["prepare", "tc", "x.jsonl", "--out", str(tmp_path / "o"), "--corrections", "from_clean"]) == 2
    assert "Unknown corrections source 'from_clean'. Did you mean 'from-clean'?" in capsys.readouterr().err
    assert main(["train", "rg", "--data", str(tmp_path), "--profile", "a100", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Unknown profile 'a100'. Did you mean 'a100-80gb'?" in err and "Available: a100-40gb" in err
    assert not (tmp_path / "o").exists()
    assert (
        main(["generate", "--data", str(tmp_path), "--out", str(tmp_path / "g.jsonl"), "-m", "x", "--prompt", "raw"])
        == 2
    )
    assert "Unknown prompt 'raw'. Available: chat, rg" in capsys.readouterr().err
    assert (
        main(
            ["judge", "--responses", str(tmp_path), "--out", str(tmp_path / "j.jsonl"), "-m", "x", "--backend", "vllm"]
        )
        == 2
    )
    assert "Unknown backend 'vllm'. Available: hf, openai" in capsys.readouterr().err
    assert not (tmp_path / "g.jsonl").exists() and not (tmp_path / "j.jsonl").exists()


def test_profiles_come_from_the_configs_folder(tmp_path, monkeypatch, capsys):
    from mixtral_ft.resources import shipped_configs_dir

    mine = tmp_path / "configs"
    assert main(["config", "copy", "all", str(mine)]) == 0
    (mine / "profiles" / "cpu.yml").rename(mine / "profiles" / "my-laptop.yml")
    monkeypatch.setenv("MIXFT_CONFIGS_DIR", str(mine))
    assert param(["train", "tc"], "profile").type.choices == (
        "a100-40gb",
        "a100-80gb",
        "h100-80gb",
        "multi-gpu",
        "my-laptop",
    )
    capsys.readouterr()
    assert main(["config", "show", "rg", "--data", str(tmp_path), "--profile", "my-laptop", "--no-validate"]) == 0
    assert "# profile:my-laptop" in capsys.readouterr().out
    assert main(["config", "show", "rg", "--data", str(tmp_path), "--profile", "cpu", "--no-validate"]) == 2
    assert (shipped_configs_dir() / "profiles" / "cpu.yml").exists()


def test_prepare_without_a_task_explains_itself(capsys):
    assert main(["prepare", "qa.jsonl", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "'qa.jsonl' is not a task" in err and "No such command" not in err
    assert "mixft prepare rg qa.jsonl --out DIR" in err and "mixft prepare tc qa.jsonl --out DIR" in err


def test_every_command_module_registers_the_same_way():
    import importlib
    import pkgutil

    from mixtral_ft import cli

    modules = [m.name for m in pkgutil.iter_modules(cli.__path__) if m.name.endswith("_cmd")]
    root = typer.Typer()
    for name in modules:
        module = importlib.import_module(f"mixtral_ft.cli.{name}")
        if name != "prepare_tc_cmd":  # a command of the prepare group, which registers it
            module.register(root)
    import click

    names = set(typer.main.get_command(root).list_commands(click.Context(typer.main.get_command(root))))
    assert {"prepare", "config", "train", "merge", "models", "generate", "judge", "eval", "report", "demo"} <= names


def test_prepare_rg_default_split_is_the_report_s(tmp_path, capsys):
    rows = [{"id": f"q{i}", "question": f"Q{i}?", "context": f"C{i}.", "answer": f"A{i}."} for i in range(2400)]
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["prepare", "rg", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "test size fraction 0.125" in capsys.readouterr().out
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["summary"]
    assert (counts["train"], counts["test"]) == (2100, 300)


# ---------------------------------------------------------------------------- config list / copy / show


def test_config_list_names_every_shipped_file(capsys):
    from mixtral_ft.resources import pipelines_dir, shipped_configs_dir

    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()]
    on_disk = sorted(
        [
            p.relative_to(shipped_configs_dir()).with_suffix("").as_posix()
            for p in shipped_configs_dir().rglob("*")
            if p.is_file()
        ]
        + [f"pipelines/{p.stem}" for p in pipelines_dir().glob("*.yml")]
    )
    assert sorted(names) == on_disk and names[:2] == ["rg", "tc"]
    assert any(
        line.startswith("profiles/a100-80gb") and "hardware profile" in line and "A100" in line
        for line in out.splitlines()
    )


def test_config_copy_a_file_a_stem_and_refuses_to_clobber(tmp_path, capsys):
    from mixtral_ft.resources import shipped_configs_dir

    assert main(["config", "copy", "rg", str(tmp_path / "my-rg.yml")]) == 0
    assert (tmp_path / "my-rg.yml").read_bytes() == (shipped_configs_dir() / "rg.yml").read_bytes()
    assert main(["config", "copy", "zero2", str(tmp_path)]) == 0  # a unique stem, into a folder
    assert (tmp_path / "zero2.json").read_bytes() == (shipped_configs_dir() / "deepspeed" / "zero2.json").read_bytes()
    capsys.readouterr()
    assert main(["config", "copy", "rg.yml", str(tmp_path / "my-rg.yml")]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert main(["config", "copy", "rg.yml", str(tmp_path / "my-rg.yml"), "--force"]) == 0
    assert main(["config", "copy", "profiles/a100-80g", str(tmp_path / "x.yml")]) == 2
    assert "Did you mean 'profiles/a100-80gb'?" in capsys.readouterr().err


def test_config_show_says_whether_values_were_validated(tmp_path, capsys, monkeypatch):
    assert main(["config", "show", "rg", "--data", str(tmp_path), "--profile", "cpu", "--no-validate"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# not validated (--no-validate)") and "note: not validated" in captured.err
    from mixtral_ft.axolotl_cfg import validate

    monkeypatch.setattr(validate, "axolotl_available", lambda: False)
    assert main(["config", "show", "rg", "--data", str(tmp_path), "--profile", "cpu"]) == 0
    captured = capsys.readouterr()
    assert (
        captured.out.startswith("# NOT validated: Axolotl is not installed") and "note: NOT validated" in captured.err
    )
    out = tmp_path / "axolotl.yml"
    assert main(["config", "render", "rg", "--data", str(tmp_path), "--profile", "cpu", "--out", str(out)]) == 0
    assert "# NOT validated: Axolotl is not installed" in out.read_text()


def test_config_help_lists_its_commands(capsys, monkeypatch):
    text = help_text(capsys, monkeypatch, "config")
    for name in ("render", "show", "list", "copy"):
        assert f" {name} " in text
