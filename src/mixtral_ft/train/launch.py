"""The exact argv that launches Axolotl: a pure function, unit-tested, run in one place (``runner``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mixtral_ft.errors import UsageError

# The profile that shards the run over several processes (DeepSpeed ZeRO-2, configs/profiles/multi-gpu.yml).
MULTI_PROCESS_PROFILES = ("multi-gpu",)


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


def check_launch(profile: str, opts: LaunchOptions) -> None:
    """Refuse, in one line that says what to add (:class:`UsageError`, exit 2), a launch that cannot
    be what was meant: a multi-process profile with one process (one GPU, with DeepSpeed's overhead
    and nothing to shard over), and the rendezvous problems :func:`build_launch_command` refuses."""
    if profile in MULTI_PROCESS_PROFILES and opts.world_size == 1:
        raise UsageError(
            f"--profile {profile} shards the run over several GPUs (DeepSpeed ZeRO-2), but --gpus is 1: "
            f"add --gpus N (the GPUs of this machine, N > 1), or use a single-GPU profile "
            "(a100-80gb, h100-80gb, a100-40gb)"
        )
    _check_rendezvous(opts)


def _check_rendezvous(opts: LaunchOptions) -> None:
    if opts.num_machines > 1 and not opts.main_process_ip:
        # accelerate would build the rendezvous address "None:29500" (commands/launch.py)
        raise UsageError(
            f"--num-machines {opts.num_machines} needs --main-process-ip (the address of machine rank 0, "
            "the same on every machine)"
        )
    if not 0 <= opts.machine_rank < opts.num_machines:
        raise UsageError(
            f"--machine-rank {opts.machine_rank} with --num-machines {opts.num_machines}: "
            f"ranks are 0 to {opts.num_machines - 1}"
        )


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
    _check_rendezvous(opts)
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
