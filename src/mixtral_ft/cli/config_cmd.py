"""`mixft config`: render, show, list and copy Axolotl configs (base + hardware profile + overrides)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.choices import Task
from mixtral_ft.cli._common import ProfileOption, enum_choice

app = typer.Typer(
    help="Render, show, list and copy Axolotl configs (base + hardware profile + overrides).", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Add the ``config`` group to the root app."""
    root.add_typer(app, name="config")


TASK_ARG = typer.Argument(
    ..., click_type=enum_choice(Task, "task"), help="rg (response generation) or tc (truth-checker)."
)
DATA_OPT = typer.Option(..., "--data", help="Directory holding train.jsonl and test.jsonl.")
BASE_OPT = typer.Option(None, "--base-model", help="Base model id or local path (default: the config's).")
SET_OPT = typer.Option([], "--set", help="Override an Axolotl key: --set key=value (YAML value, dotted keys).")
RUN_DIR_OPT = typer.Option(Path("runs/run"), "--run-dir", help="Where output_dir and dataset_prepared_path point.")
NO_VALIDATE_OPT = typer.Option(False, "--no-validate", help="Skip Axolotl's validate_config.")


def _render(
    task: Task, data: Path, profile: str, base_model: str | None, overrides: list[str], run_dir: Path, validate: bool
):
    """The rendered config and one line saying whether Axolotl validated its values."""
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.axolotl_cfg.validate import validate_with_axolotl

    rendered = render(
        RenderRequest(
            task=task.value,
            data_dir=data,
            profile=profile,
            run_dir=run_dir,
            base_model=base_model,
            overrides=tuple(overrides),
        )
    )
    if not validate:
        return rendered, "not validated (--no-validate): keys checked against Axolotl's schema, values not checked"
    if validate_with_axolotl(rendered.values):
        return rendered, "validated by Axolotl's validate_config"
    return rendered, (
        "NOT validated: Axolotl is not installed; keys were checked against the snapshot, values were not validated"
    )


@app.command("render")
def render_cmd(
    task: Task = TASK_ARG,
    data: Path = DATA_OPT,
    profile: str = ProfileOption,
    base_model: str | None = BASE_OPT,
    overrides: list[str] = SET_OPT,
    run_dir: Path = RUN_DIR_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the Axolotl YAML."),
    no_validate: bool = NO_VALIDATE_OPT,
) -> None:
    """Write the merged Axolotl config (checked against Axolotl's schema) to --out."""
    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.errors import UsageError
    from mixtral_ft.util.atomic import atomic_write_text, guard_destination

    guard_destination(out, [data / "train.jsonl", data / "test.jsonl"])
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give the YAML file to write")
    rendered, validation = _render(task, data, profile, base_model, overrides, run_dir, not no_validate)
    header = (
        f"Rendered by mixft: config render {task.value} --profile {profile}"
        + (f"\nOverrides: {', '.join(overrides)}" if overrides else "")
        + f"\n{validation}"
    )
    atomic_write_text(out, rendered.to_yaml(header))
    if not validation.startswith("validated"):
        info(f"note: {validation}")
    echo(str(out))


@app.command("show")
def show_cmd(
    task: Task = TASK_ARG,
    data: Path = DATA_OPT,
    profile: str = ProfileOption,
    base_model: str | None = BASE_OPT,
    overrides: list[str] = SET_OPT,
    run_dir: Path = RUN_DIR_OPT,
    no_validate: bool = NO_VALIDATE_OPT,
) -> None:
    """Print the resolved config, each key marked with where it came from (base, profile, override)."""
    from mixtral_ft.cli._common import echo, info

    rendered, validation = _render(task, data, profile, base_model, overrides, run_dir, not no_validate)
    echo(f"# {validation}")
    echo(rendered.show().rstrip("\n"))
    if not validation.startswith("validated"):
        info(f"note: {validation}")


@app.command("list")
def list_cmd() -> None:
    """List the shipped configs, hardware profiles, DeepSpeed files, prompts and pipelines (like `tune ls`)."""
    import os

    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.resources import CONFIGS_ENV, shipped_configs_dir
    from mixtral_ft.resources.catalog import catalog

    entries = catalog(shipped_configs_dir())
    width = max(len(e.name) for e in entries)
    kind_width = max(len(e.kind) for e in entries)
    for e in entries:
        echo(f"{e.name:<{width}}  {e.kind:<{kind_width}}  {e.description}".rstrip())
    from mixtral_ft.resources import pipelines_dir

    info(f"shipped in {shipped_configs_dir()} and {pipelines_dir()}; start your own with: mixft config copy NAME DEST")
    if os.environ.get(CONFIGS_ENV):
        info(f"note: ${CONFIGS_ENV} is set: train and config read {os.environ[CONFIGS_ENV]} instead")


@app.command("copy", no_args_is_help=True)
def copy_cmd(
    name: str = typer.Argument(
        ...,
        help="A name from `mixft config list` (e.g. rg, profiles/cpu, cpu, pipelines/report), or 'all' for the "
        "whole configs folder.",
    ),
    dest: Path = typer.Argument(..., help="Destination file or folder ('all': a new folder)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing destination."),
) -> None:
    """Copy a shipped config to start your own (like `tune cp`). `train` and `config` read a whole
    configs folder: copy 'all', edit it and point MIXFT_CONFIGS_DIR at it (a profile copied into that
    folder's profiles/ becomes a --profile choice)."""
    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.resources import CONFIGS_ENV, shipped_configs_dir
    from mixtral_ft.resources.catalog import ALL, copy_config, find_config

    written = copy_config(name, dest, force=force, folder=shipped_configs_dir())
    echo(str(written))
    if name == ALL:
        info(f"use it with: export {CONFIGS_ENV}={written.resolve()}")
    elif written.suffix == ".yml" and find_config(name, shipped_configs_dir()).kind.startswith("pipeline"):
        info(f"run it with: mixft run {written}")
    else:
        info(
            f"train and config read a whole configs folder: put this file in one (mixft config copy all DIR) "
            f"and export {CONFIGS_ENV}=DIR"
        )
