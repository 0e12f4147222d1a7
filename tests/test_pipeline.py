"""`mixft run` (fast tier): the pipeline file's checks (FILE:LINE, nothing written), the command table
against the CLI, the skip rule on real eval/report stages (content hashes, downstream only), a
failed stage, the lock, --status while it is held, --dry-run of report.yml against the README."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mixtral_ft.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run(capfd, *args: str) -> tuple[int, str, str]:
    rc = main(["run", *map(str, args)])
    out, err = capfd.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- refused with FILE:LINE


BAD = {
    "unknown top-level key": (
        """
        vars: {out: OUT}
        stagez: []
        """,
        2,
        "pipeline: unknown key 'stagez'. Did you mean 'stages'?",
    ),
    "unknown stage key": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            rnu: eval rg --verdicts v.jsonl --out ${out}/a
        """,
        4,
        "stage: unknown key 'rnu'. Did you mean 'run'?",
    ),
    "unknown stage reference": (
        """
        vars: {out: OUT}
        stages:
          - name: eval_a
            run: eval rg --verdicts v.jsonl --out ${out}/a
          - name: report
            run: report ${stages.evl_a.out} --out ${out}/report
        """,
        6,
        "stage report: no stage 'evl_a' in this pipeline. Did you mean 'eval_a'?",
    ),
    "cycle by references": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts ${stages.b.out}/x.jsonl --out ${out}/a
          - name: b
            run: eval rg --verdicts ${stages.a.out}/x.jsonl --out ${out}/b
        """,
        4,
        "stages depend on each other in a cycle: a -> b -> a",
    ),
    "cycle by paths": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts ${out}/b/x.jsonl --out ${out}/a
          - name: b
            run: eval rg --verdicts ${out}/a/x.jsonl --out ${out}/b
        """,
        3,
        "stages depend on each other in a cycle: a -> b -> a: a reads",
    ),
    "reads what a later stage writes": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts ${out}/b/x.jsonl --out ${out}/a
          - name: b
            run: eval rg --verdicts v.jsonl --out ${out}/b
        """,
        3,
        "which stage b writes after it",
    ),
    "unknown variable": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts ${verdicts} --out ${out}/a
        """,
        4,
        "unknown variable ${verdicts}",
    ),
    "option the command does not have": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdict v.jsonl --out ${out}/a
        """,
        4,
        "No such option '--verdict'. Did you mean '--verdicts'?",
    ),
    "a flag only the runner adds": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts v.jsonl --out ${out}/a --force
        """,
        4,
        "--force is the runner's to add",
    ),
    "not a stage command": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: plan rg --profile cpu
        """,
        4,
        "`mixft plan` is not a stage",
    ),
    "output outside the output folder": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts v.jsonl --out elsewhere/a
        """,
        3,
        "writes elsewhere/a, outside the pipeline's output folder OUT",
    ),
    "two stages write one output": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts v.jsonl --out ${out}/a
          - name: b
            run: eval rg --verdicts v.jsonl --out ${out}/a
        """,
        5,
        "writes OUT/a, which stage a writes too",
    ),
    "a stage name twice": (
        """
        vars: {out: OUT}
        stages:
          - name: a
            run: eval rg --verdicts v.jsonl --out ${out}/a
          - name: a
            run: eval rg --verdicts v.jsonl --out ${out}/b
        """,
        5,
        "stage name 'a' is used twice (first on line 3)",
    ),
    "hostile YAML": (
        """
        vars:
          out: OUT
          a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
          b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
          c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
          d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
        stages: []
        """,
        6,
        "YAML refused: more than 10,000 values once its aliases are expanded",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_pipeline_is_refused_with_file_and_line_and_writes_nothing(tmp_path, monkeypatch, capfd, case):
    text, line, message = BAD[case]
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "p.yml", text)
    rc, out, err = run(capfd, path)
    assert rc == 2, err
    assert f"{path}:{line}: " in err and message in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yml"]  # no OUT, no state, no lock


def test_variables_presets_and_var(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "p.yml",
        """
        vars:
          out: OUT
          size: small
          rows: ~
          label: "${size} run"
        presets:
          size:
            small: {rows: "3"}
            large: {rows: "300"}
        stages:
          - name: a
            run: eval rg --verdicts v${rows}.jsonl --label "${label}" --out ${out}/a
        """,
    )
    rc, out, _ = run(capfd, path, "--dry-run")
    assert rc == 0 and "mixft eval rg --verdicts v3.jsonl --label 'small run' --out OUT/a" in out
    rc, out, _ = run(capfd, path, "--dry-run", "--var", "size=large", "--var", "label=x y", "--out", "elsewhere")
    assert rc == 0 and "mixft eval rg --verdicts v300.jsonl --label 'x y' --out elsewhere/a" in out
    rc, _, err = run(capfd, path, "--dry-run", "--var", "size=huge")
    assert rc == 2 and "--var size=huge: not one of small, large (presets.size)" in err
    rc, _, err = run(capfd, path, "--dry-run", "--var", "sise=large")
    assert rc == 2 and "has no variable 'sise'. Did you mean 'size'?" in err
    write(tmp_path / "q.yml", path.read_text().replace("size: small", "size: ~"))
    rc, _, err = run(capfd, tmp_path / "q.yml", "--dry-run")
    assert rc == 2 and f"{tmp_path / 'q.yml'}:3: variable size has no value: give --var size=..." in err
    assert not (tmp_path / "OUT").exists()


def test_a_hostile_var_is_refused_where_a_command_would_read_it_as_yaml(tmp_path, monkeypatch, capfd):
    """A --var value is text; substituted into a --set it is checked like any --set value, before
    anything is written."""
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "p.yml",
        """
        vars: {out: OUT, tokens: "[]"}
        stages:
          - name: train
            run: train rg --data d --profile cpu --run-dir ${out}/run --set special_tokens=${tokens}
        """,
    )
    bomb = "[&a [x,x,x,x,x,x,x,x,x,x],&b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a],&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b],&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]]"
    rc, _, err = run(capfd, path, "--var", f"tokens={bomb}")
    assert rc == 2
    assert f"{path}:4: stage train: --set special_tokens: YAML refused: more than 10,000 values" in err
    assert not (tmp_path / "OUT").exists()


def test_every_shipped_pipeline_resolves_and_begins_with_its_command(capfd, tmp_path, monkeypatch):
    """In an empty working directory: the pipelines' default outputs (out/demo, ...) are relative, and
    a demo already run in the checkout would make the dry run print its stages as skipped."""
    from mixtral_ft.resources import pipelines_dir

    monkeypatch.chdir(tmp_path)

    files = sorted(pipelines_dir().glob("*.yml"))
    assert [p.stem for p in files] == ["demo-cpu", "report", "rg-only"]
    for path in files:
        assert path.read_text().startswith(f"# mixft run pipelines/{path.name}"), path
        rc, out, err = run(capfd, path, "--dry-run", *_required_vars(path))
        assert rc == 0, err
        assert out.count("\nmixft ") >= 5


def test_plan_of_a_stage_that_cannot_be_planned_is_an_error(tmp_path, monkeypatch, capfd):
    """--plan asked for a plan: a stage the planner refuses to plan (no such base model) is named in
    the table with the planner's reason, and the run exits 2 rather than reporting 0 GPU-hours."""
    monkeypatch.chdir(tmp_path)
    report = REPO / "pipelines" / "report.yml"
    missing = tmp_path / "no-model"
    rc, out, err = run(
        capfd,
        report,
        "--plan",
        "--only",
        "train_rg",
        f"--var=base_model={missing}",
        "--var=judge_url=X",
        "--var=judge_model=X",
    )
    assert rc == 2
    assert "train_rg" in out and f"no plan: error: base_model: {missing}: no such directory" in out
    assert err.rstrip().endswith("error: 1 stage(s) could not be planned (train_rg): the note of each says why")
    assert list(tmp_path.iterdir()) == []


def _required_vars(path: Path) -> list[str]:
    from mixtral_ft.pipeline.schema import read_pipeline

    pf = read_pipeline(path)
    preset_vars = {k for table in pf.presets.values() for choice in table.values() for k in choice}
    return [f"--var={k}=X" for k, v in pf.vars.items() if v is None and k not in preset_vars]


def test_config_list_and_copy_show_the_pipelines(tmp_path, capfd):
    assert main(["config", "list"]) == 0
    out, _ = capfd.readouterr()
    for name in ("pipelines/report", "pipelines/demo-cpu", "pipelines/rg-only"):
        assert re.search(rf"^{name}\s+pipeline \(mixft run\)\s+\S", out, re.MULTILINE), out
    assert main(["config", "copy", "report", str(tmp_path)]) == 0
    _, err = capfd.readouterr()
    copied = tmp_path / "report.yml"
    assert f"run it with: mixft run {copied}" in err
    assert copied.read_text() == (REPO / "pipelines" / "report.yml").read_text()


def test_the_demo_choices_are_the_presets_of_demo_cpu():
    from mixtral_ft.cli.demo_cmd import DemoModel
    from mixtral_ft.pipeline import DEMO_PIPELINE
    from mixtral_ft.pipeline.runner import find_pipeline
    from mixtral_ft.pipeline.schema import read_pipeline

    presets = read_pipeline(find_pipeline(DEMO_PIPELINE)).presets["model"]
    assert [m.value for m in DemoModel] == list(presets)


# ----------------------------------------------------------------------------- the table and the CLI


def test_the_command_table_agrees_with_the_cli():
    """Every option the table names exists; its flags are exactly the command's options without a value."""
    import click
    import typer.main

    from mixtral_ft.cli.main import app
    from mixtral_ft.pipeline.commands import COMMANDS

    root = typer.main.get_command(app)
    for spec in COMMANDS:
        node, ctx = root, click.Context(root)
        for word in spec.words:
            node = node.get_command(ctx, word)
            ctx = click.Context(node, parent=ctx)
        opts = {o: p for p in node.params if isinstance(p, click.Option) for o in p.opts}
        flags = {o for o, p in opts.items() if p.is_flag and o != "--help"}
        assert set(spec.flags) == flags, (spec.name, flags ^ set(spec.flags))
        for option in [*spec.inputs, *spec.outputs, *spec.plan_copy, *([spec.plan_data] if spec.plan_data else [])]:
            assert option in opts, (spec.name, option)
        positional = [p for p in node.params if isinstance(p, click.Argument)]
        assert bool(positional) == (spec.positional is not None), spec.name


# ----------------------------------------------------------------------------- --dry-run vs README


def readme_gpu_commands() -> list[list[str]]:
    """The single `mixft` commands of the README's GPU section (not `mixft run`), $VARs as VAR."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## On a GPU box", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == ["mixft"] and argv[1:2] != ["run"]:
                commands.append([re.sub(r"\$\{?(\w+)\}?", r"\1", a) for a in argv])
    return commands


def test_dry_run_of_report_yml_prints_the_readme_gpu_commands(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(
        capfd,
        REPO / "pipelines" / "report.yml",
        "--var=base_model=MODEL",
        "--var=qa=qa.jsonl",
        "--var=judge_url=JUDGE_URL",
        "--var=judge_model=JUDGE_MODEL",
        "--dry-run",
    )
    assert rc == 0, err
    printed = [shlex.split(line) for line in out.splitlines() if line.startswith("mixft ")]
    readme = readme_gpu_commands()
    assert len(readme) == 16
    assert printed == readme
    assert list(tmp_path.iterdir()) == []  # --dry-run writes nothing


# ----------------------------------------------------------------------------- runs of real stages


def _rows(path: Path, n: int, salt: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"q{i}", "model": "m", "hallucinated": (i + salt) % 4 == 0}) + "\n")
    return path


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A pipeline of four quick stages: eval_a and eval_b read files, report_a reads eval_a,
    report_ab reads both."""
    monkeypatch.chdir(tmp_path)
    _rows(tmp_path / "pred.jsonl", 20, 1)
    _rows(tmp_path / "gold.jsonl", 20)
    _rows(tmp_path / "other.jsonl", 20, 2)
    return write(
        tmp_path / "small.yml",
        """
        # mixft run small.yml
        vars: {out: OUT}
        stages:
          - name: eval_a
            run: eval tc --pred pred.jsonl --gold gold.jsonl --label a --out ${out}/eval/a
          - name: eval_b
            run: eval rg --verdicts other.jsonl --label b --out ${out}/eval/b
          - name: report_a
            run: report ${stages.eval_a.out} --out ${out}/report-a
          - name: report_ab
            run: report ${stages.eval_a.out} ${stages.eval_b.out} --out ${out}/report-ab
        """,
    )


def ran(err: str) -> list[str]:
    return re.findall(r"^\[\d+/\d+\] (\S+)(?: \(.*?\))?: runs, ", err, re.MULTILINE)


def skipped(err: str) -> list[str]:
    return re.findall(r"^\[\d+/\d+\] (\S+): skipped, up to date", err, re.MULTILINE)


def test_skip_rule_content_hashes_and_downstream_only(small, tmp_path, capfd):
    rc, out, err = run(capfd, small)
    assert rc == 0, err
    assert ran(err) == ["eval_a", "eval_b", "report_a", "report_ab"]
    assert re.search(r"^\[4/4\] report_ab: done in \d", err, re.MULTILINE)
    assert "4 stage(s) ran, 0 up to date" in out
    state = json.loads((tmp_path / "OUT" / "mixft-run.json").read_text())
    assert {s["status"] for s in state["stages"].values()} == {"done"}
    assert (tmp_path / "OUT" / "eval" / "a" / "manifest.json").exists()  # each stage writes its own manifest

    rc, out, err = run(capfd, small)  # nothing changed
    assert rc == 0 and ran(err) == [] and skipped(err) == ["eval_a", "eval_b", "report_a", "report_ab"]

    os.utime(tmp_path / "other.jsonl", (1, 1))  # touched, same bytes: same SHA-256
    rc, _, err = run(capfd, small)
    assert rc == 0 and ran(err) == []

    _rows(tmp_path / "other.jsonl", 20, 3)  # new content: eval_b and what reads it, nothing else
    rc, out, err = run(capfd, small, "--status")
    assert re.search(r"^eval_b\s+stale\s+\S+\s+input --verdicts other.jsonl changed", out, re.MULTILINE), out
    assert re.search(r"^report_ab\s+stale\s+\S+\s+it reads from eval_b, which runs again first", out, re.MULTILINE)
    assert re.search(r"^report_a\s+done", out, re.MULTILINE)
    rc, _, err = run(capfd, small)
    assert rc == 0 and ran(err) == ["eval_b", "report_ab"] and skipped(err) == ["eval_a", "report_a"]
    assert "mixft eval rg --verdicts other.jsonl --label b --out OUT/eval/b --force" in err  # replaced whole

    rc, _, err = run(capfd, small, "--only", "report_a", "--force")
    assert rc == 0 and ran(err) == ["report_a"]


def test_a_failed_stage_stops_the_run_with_its_own_message_and_exit_code(small, tmp_path, capfd):
    (tmp_path / "other.jsonl").write_text('{"id": "q1", "model": "m"}\nnot json\n')
    rc, out, err = run(capfd, small)
    assert rc == 2  # eval's own exit status for bad input
    assert ran(err) == ["eval_a", "eval_b"]
    assert "other.jsonl:2" in err  # the command's own message, file and line
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: [2/4] eval_b failed with exit status 2 (its own message is above); ")
    assert "the 2 stage(s) after it did not run" in last and "continue with: mixft run" in last
    assert not (tmp_path / "OUT" / "report-a").exists()
    rc, out, err = run(capfd, small, "--status")
    assert re.search(r"^eval_b\s+failed\s+\S+\s+its last attempt failed \(exit status 2\)", out, re.MULTILINE), out
    assert re.search(r"^report_a\s+pending", out, re.MULTILINE)
    assert "the last run stopped at stage eval_b (exit status 2" in out and "the stages after it did not run" in out
    _rows(tmp_path / "other.jsonl", 20)  # fixed: the run goes on from there
    rc, _, err = run(capfd, small)
    assert rc == 0 and skipped(err) == ["eval_a"] and ran(err) == ["eval_b", "report_a", "report_ab"]


HOLD = """
import sys, time
from pathlib import Path
from mixtral_ft.util.lock import output_lock
with output_lock(Path(sys.argv[1]) / "mixft-run", "pipeline output folder"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_one_runner_per_output_and_status_while_it_is_held(small, tmp_path, capfd):
    assert run(capfd, small, "--until", "eval_a")[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "OUT")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        rc, _, err = run(capfd, small)
        assert rc == 75
        assert (
            f"in use by pid {holder.pid}" in err and "another mixft run is writing this pipeline output folder" in err
        )
        before = sorted(p.name for p in (tmp_path / "OUT").iterdir())
        rc, out, err = run(capfd, small, "--status")
        assert rc == 0, err
        assert re.search(r"^eval_a\s+done", out, re.MULTILINE) and f"running now: pid {holder.pid}" in out
        assert sorted(p.name for p in (tmp_path / "OUT").iterdir()) == before  # --status wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_an_input_that_no_stage_writes_must_exist_before_anything_runs(small, tmp_path, capfd):
    (tmp_path / "gold.jsonl").unlink()
    rc, _, err = run(capfd, small)
    assert rc == 2
    assert f"{small}:4: stage eval_a: --gold gold.jsonl: not found, and no stage writes it" in err
    assert not (tmp_path / "OUT" / "eval").exists()
    rc, _, err = run(capfd, small, "--only", "report_a")
    assert rc == 2 and "stage report_a reads from stage eval_a, which has not finished here" in err


def test_selection_options(small, capfd):
    rc, out, _ = run(capfd, small, "--dry-run", "--from", "eval_b", "--until", "report_a")
    assert rc == 0 and re.findall(r"^# \d+/\d+ (\S+):", out, re.MULTILINE) == ["eval_b", "report_a"]
    rc, _, err = run(capfd, small, "--dry-run", "--only", "reprot_a")
    assert rc == 2 and "--only reprot_a: Unknown stage 'reprot_a'. Did you mean 'report_a'?" in err
