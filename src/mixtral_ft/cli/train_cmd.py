"""`mixft train`: Launch Axolotl training runs for the RG or TC model."""

from __future__ import annotations

from pathlib import Path

import typer

from mixtral_ft.cli._common import ProfileOption

app = typer.Typer(help="Launch Axolotl training runs for the RG or TC model.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Add the ``train`` group to the root app."""
    root.add_typer(app, name="train")


_TASK_HELP = {
    "rg": "Train the RAG response generator (configs/rg.yml) on `mixft prepare rg` output.",
    "tc": "Train the truth-checker (configs/tc.yml) on `mixft prepare tc` output.",
}


def _train(
    task: str,
    data: Path,
    profile: str,
    base_model: str | None,
    overrides: list[str],
    gpus: int,
    run_dir: Path | None,
    dry_run: bool,
    resume: bool,
    num_machines: int,
    machine_rank: int,
    main_process_ip: str | None,
    main_process_port: int | None,
    probe: bool = False,
    skip_plan_check: bool = False,
) -> None:
    import shlex
    import time

    from mixtral_ft.cli._common import echo, info
    from mixtral_ft.train.api import TrainRequest, resolve_start, run
    from mixtral_ft.train.launch import LaunchOptions

    if run_dir is None:
        if resume:
            from mixtral_ft.errors import UsageError

            raise UsageError("--resume needs --run-dir (the run to continue)")
        run_dir = Path("runs") / f"{task}-{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    req = TrainRequest(
        task=task,
        data_dir=data,
        profile=profile,
        run_dir=run_dir,
        base_model=base_model,
        overrides=tuple(overrides),
        resume=resume,
        probe=probe,
        skip_plan_check=skip_plan_check,
        launch=LaunchOptions(
            gpus=gpus,
            num_machines=num_machines,
            machine_rank=machine_rank,
            main_process_ip=main_process_ip,
            main_process_port=main_process_port,
        ),
    )
    from mixtral_ft.train.launch import check_launch

    check_launch(profile, req.launch)  # before anything is rendered: a launch that cannot be what was meant

    if dry_run:
        start = resolve_start(req)
        echo(start.config_yaml.rstrip("\n"))
        echo(f"# command (config would be written to {run_dir / 'axolotl.yml'}):")
        echo("# " + shlex.join(start.command))
        return
    info(f"run directory: {run_dir}  (log: {run_dir / 'train.log'})")
    _print_result(run(req), run_dir, probe)


def _print_result(result, run_dir: Path, probe: bool) -> None:
    """What ``mixft train`` prints at the end: the adapter, steps, losses and time; the probe's lines."""
    from mixtral_ft.cli._common import echo

    s = result.summary
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    if result.already_finished:
        echo(
            f"run {run_dir} is already finished: step {s.global_step}, adapter {s.adapter_dir or 'not written'}; "
            "nothing to do (raise max_steps or num_epochs with --set to train further)"
        )
        return
    echo(f"adapter: {s.adapter_dir or 'not written'}")
    echo(
        f"steps: {s.global_step}  train loss: {fmt(s.train_loss)}  eval loss: {fmt(s.eval_loss)}  "
        f"wall time: {result.wall_s:.0f} s"
    )
    if probe:
        from mixtral_ft.train.probe_report import PROBE_FILE, format_lines

        if result.probe is None:
            echo(f"probe: no {PROBE_FILE} was written (see {run_dir / 'train.log'})")
        else:
            for line in format_lines(result.probe):
                echo(f"probe {line}")
    echo(f"run: {result.run_dir}")


def _make(task: str):
    def command(
        data: Path = typer.Option(
            ..., "--data", help=f"Directory with train.jsonl and test.jsonl from `mixft prepare {task}`."
        ),
        profile: str = ProfileOption,
        base_model: str | None = typer.Option(
            None, "--base-model", help="Base model id or local path (default: the config's)."
        ),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override an Axolotl key: --set key=value (YAML value, dotted keys)."
        ),
        gpus: int = typer.Option(1, "--gpus", min=1, help="Processes per machine (accelerate --num_processes)."),
        run_dir: Path | None = typer.Option(None, "--run-dir", help="Run directory (default runs/TASK-PROFILE-TIME)."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Print the resolved config and the command; write nothing."
        ),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the run in --run-dir from its newest checkpoint."
        ),
        num_machines: int = typer.Option(1, "--num-machines", min=1, help="Multi-node: number of machines."),
        machine_rank: int = typer.Option(0, "--machine-rank", min=0, help="Multi-node: rank of this machine."),
        main_process_ip: str | None = typer.Option(None, "--main-process-ip", help="Multi-node: address of rank 0."),
        main_process_port: int | None = typer.Option(None, "--main-process-port", help="Multi-node: port of rank 0."),
        probe: bool = typer.Option(
            False,
            "--probe",
            help="Record what took effect (attention, 4-bit experts), "
            "peak memory and tokens/s per step in output/mixft_probe.json; print a summary.",
        ),
        skip_plan_check: bool = typer.Option(
            False,
            "--skip-plan-check",
            help="Launch even when `mixft plan` says the run needs more GPU memory than is free.",
        ),
    ) -> None:
        _train(
            task,
            data,
            profile,
            base_model,
            overrides,
            gpus,
            run_dir,
            dry_run,
            resume,
            num_machines,
            machine_rank,
            main_process_ip,
            main_process_port,
            probe,
            skip_plan_check,
        )

    command.__doc__ = _TASK_HELP[task]
    return command


app.command("rg")(_make("rg"))
app.command("tc")(_make("tc"))
