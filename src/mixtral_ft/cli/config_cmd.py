"""`mixft config`: Render and inspect Axolotl configs (base + hardware profile + overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Render and inspect Axolotl configs (base + hardware profile + overrides).", no_args_is_help=True)

TASK_ARG = typer.Argument(..., help="rg (response generation) or tc (truth-checker).")
DATA_OPT = typer.Option(..., "--data", help="Directory holding train.jsonl and test.jsonl.")
PROFILE_OPT = typer.Option(..., "--profile", help="Hardware profile: a100-80gb, a100-40gb, h100-80gb, multi-gpu, cpu.")
BASE_OPT = typer.Option(None, "--base-model", help="Base model id or local path (default: the config's).")
SET_OPT = typer.Option([], "--set", help="Override an Axolotl key: --set key=value (YAML value, dotted keys).")
RUN_DIR_OPT = typer.Option(Path("runs/run"), "--run-dir", help="Where output_dir and dataset_prepared_path point.")


def _render(task: str, data: Path, profile: str, base_model: Optional[str], overrides: list[str], run_dir: Path,
            validate: bool):
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.axolotl_cfg.validate import validate_with_axolotl

    rendered = render(RenderRequest(task=task, data_dir=data, profile=profile, run_dir=run_dir,
                                    base_model=base_model, overrides=tuple(overrides)))
    checked = validate_with_axolotl(rendered.values) if validate else False
    return rendered, checked


@app.command("render")
def render_cmd(
    task: str = TASK_ARG,
    data: Path = DATA_OPT,
    profile: str = PROFILE_OPT,
    base_model: Optional[str] = BASE_OPT,
    overrides: list[str] = SET_OPT,
    run_dir: Path = RUN_DIR_OPT,
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the Axolotl YAML."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip Axolotl's validate_config."),
) -> None:
    """Write the merged Axolotl config (checked against Axolotl's schema) to --out."""
    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.util.atomic import atomic_write_text

    rendered, checked = _render(task, data, profile, base_model, overrides, run_dir, not no_validate)
    header = f"Rendered by mixft: config render {task} --profile {profile}" + (
        f"\nOverrides: {', '.join(overrides)}" if overrides else "")
    atomic_write_text(out, rendered.to_yaml(header))
    if not checked and not no_validate:
        info("note: Axolotl is not installed; keys were checked against the snapshot, values were not validated")
    echo(str(out))


@app.command("show")
def show_cmd(
    task: str = TASK_ARG,
    data: Path = DATA_OPT,
    profile: str = PROFILE_OPT,
    base_model: Optional[str] = BASE_OPT,
    overrides: list[str] = SET_OPT,
    run_dir: Path = RUN_DIR_OPT,
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip Axolotl's validate_config."),
) -> None:
    """Print the resolved config, each key marked with where it came from (base, profile, override)."""
    from mixtral_ft.cli._common import echo

    rendered, _ = _render(task, data, profile, base_model, overrides, run_dir, not no_validate)
    echo(rendered.show().rstrip("\n"))
