"""Progress bars on stderr, off when stderr is not a terminal (or MIXFT_PROGRESS=0)."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_enabled() -> bool:
    forced = os.environ.get("MIXFT_PROGRESS")
    if forced is not None:
        return forced not in ("0", "false", "no", "")
    return sys.stderr.isatty()


class ProgressBar:
    """A manual bar (``update(n)``) for byte- or request-driven progress; a no-op when disabled."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", unit_scale: bool = False):
        self._bar = None
        if progress_enabled():
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                unit_scale=unit_scale,
                file=sys.stderr,
                dynamic_ncols=True,
                leave=False,
            )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **kwargs) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kwargs, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
