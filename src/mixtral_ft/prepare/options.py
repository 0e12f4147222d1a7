"""``PrepareOptions``: what every ``prepare`` task takes. A task's own settings (RG's snippet
joining, TC's augmentation and judgements...) live on its rules (``prepare.rg``, ``prepare.tc``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mixtral_ft.errors import UsageError
from mixtral_ft.prepare.buckets import TARGET_BUCKET_BYTES
from mixtral_ft.prepare.fields import DEFAULT_PROBLEM_CAP
from mixtral_ft.prepare.readers import InputSpec
from mixtral_ft.prepare.split import TestSize


@dataclass(frozen=True)
class PrepareOptions:
    """The inputs, the output and the split of one ``prepare`` run; the CLI builds one of these.

    ``fields`` maps canonical fields (``question``, ``context``...) to input columns (dotted
    paths allowed); a field not named keeps its own name. ``test_size`` and ``sequence_len``
    left at None take the task's defaults.
    """

    inputs: Sequence[InputSpec]
    out: Path
    fields: Mapping[str, str] = field(default_factory=dict)
    group_by: str | None = None
    test_size: TestSize | None = None
    seed: int = 42
    skip_invalid: bool = False
    force: bool = False
    tokenizer: Path | None = None
    sequence_len: int | None = None
    preview: int = 0  # examples kept for ``--preview``
    max_problems: int = DEFAULT_PROBLEM_CAP
    workers: int = 0  # read-pass processes, 0 = automatic
    bucket_bytes: int = TARGET_BUCKET_BYTES  # size of one external-sort bucket (tests make it small)

    def with_defaults(self, test_size: TestSize, sequence_len: int) -> PrepareOptions:
        """These options with a task's defaults where none were given."""
        return replace(
            self,
            test_size=self.test_size if self.test_size is not None else test_size,
            sequence_len=self.sequence_len if self.sequence_len is not None else sequence_len,
        )

    @property
    def split_size(self) -> TestSize:
        """``test_size``, once ``with_defaults`` has filled it in (the pipeline does, first)."""
        if self.test_size is None:
            raise ValueError("test_size is unset: run_prepare fills in the task's default")
        return self.test_size

    @property
    def max_len(self) -> int:
        """``sequence_len``, once ``with_defaults`` has filled it in (the pipeline does, first)."""
        if self.sequence_len is None:
            raise ValueError("sequence_len is unset: run_prepare fills in the task's default")
        return self.sequence_len

    def check(self) -> None:
        """The checks that need no task (raise ``UsageError``)."""
        if not self.inputs:
            raise UsageError("give at least one INPUT file")
        if self.sequence_len is not None and self.sequence_len < 1:
            raise UsageError(f"--sequence-len {self.sequence_len}: must be positive")
