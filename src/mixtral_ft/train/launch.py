"""The exact argv that launches Axolotl: a pure function, unit-tested, run in one place (``runner``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LaunchOptions:
    """How many processes and where; multi-node fields pass straight through to accelerate."""

    gpus: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None

    @property
    def world_size(self) -> int:
        return self.gpus * self.num_machines


def build_launch_command(
    config_path: str | Path, opts: LaunchOptions = LaunchOptions(), python: str | None = None
) -> list[str]:
    """``python -m axolotl.cli.train CFG`` for one process, else ``accelerate launch ... -m axolotl.cli.train CFG``.

    The single-process form is what ``axolotl train --launcher python`` runs; it needs no
    accelerate config. DeepSpeed is named in the Axolotl YAML (``deepspeed:``), which Axolotl
    hands to the HF Trainer, so accelerate needs no DeepSpeed flags.
    """
    python = python or sys.executable
    config = str(config_path)
    if opts.gpus < 1 or opts.num_machines < 1:
        raise ValueError("gpus and num_machines must be at least 1")
    if opts.world_size == 1:
        return [python, "-m", "axolotl.cli.train", config]
    cmd = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(opts.world_size),
        "--num_machines",
        str(opts.num_machines),
        "--machine_rank",
        str(opts.machine_rank),
    ]
    if opts.main_process_ip:
        cmd += ["--main_process_ip", opts.main_process_ip]
    if opts.main_process_port:
        cmd += ["--main_process_port", str(opts.main_process_port)]
    cmd += ["--multi_gpu"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # precision comes from the Axolotl YAML
    cmd += ["-m", "axolotl.cli.train", config]
    return cmd
