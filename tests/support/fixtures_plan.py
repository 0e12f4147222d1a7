"""The planner's checked-in measurements as a fixture, and the run that does not fit its card.

- ``warm_cache`` -> ``Path``: ``$MIXFT_CACHE`` holding a copy of ``tests/golden/plans/cache`` (plans
  may add entries), so a plan of a shipped pair measures nothing.
- ``refusal_plan()``: ``REFUSAL`` planned as ``mixft plan tc --profile a100-80gb --gpu-memory 36``
  plans it, for the refusal message and the CLI's verdict.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "plans"
CACHE = GOLDEN / "cache"
# A run that really does not fit: TC with the 80 GB profile (2 x 8192 tokens per micro batch) on a 36 GiB device.
REFUSAL = ("tc", "a100-80gb", 36.0)


@pytest.fixture
def warm_cache(tmp_path, monkeypatch):
    """$MIXFT_CACHE holding the checked-in measurements (a copy: plans may add entries)."""
    if not CACHE.is_dir():
        pytest.skip(f"{CACHE} missing; run the slow golden test with MIXFT_UPDATE_GOLDEN=1")
    target = tmp_path / "mixft-cache"
    shutil.copytree(CACHE, target / "plan")
    monkeypatch.setenv("MIXFT_CACHE", str(target))
    return target


def refusal_plan():
    """``REFUSAL`` planned as ``mixft plan tc --profile a100-80gb --gpu-memory 36`` plans it (with the searches)."""
    from mixtral_ft.axolotl_cfg.keys import snapshot_keys
    from mixtral_ft.axolotl_cfg.render import RenderRequest, render
    from mixtral_ft.plan.shipped import DATA_PLACEHOLDER, RUN_PLACEHOLDER
    from mixtral_ft.plan.training import plan_training

    task, profile, gib = REFUSAL
    rendered = render(
        RenderRequest(task=task, data_dir=DATA_PLACEHOLDER, profile=profile, run_dir=RUN_PLACEHOLDER),
        keys=snapshot_keys(),
    )
    return plan_training(rendered, None, gib, task=task)
