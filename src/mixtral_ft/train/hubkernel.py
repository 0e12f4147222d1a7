"""Attention kernels from the Hugging Face Hub: whether one can load where Axolotl will run.

:func:`kernel_unavailable` asks the ``kernels`` package, with the Hub forced offline and no CUDA context,
whether ``$LOCAL_KERNELS`` or the Hugging Face cache holds a loadable build of the kernel an
``attn_implementation`` names (or the one transformers falls back to for flash attention). How
transformers and ``kernels`` resolve one, file and line: docs/design/training-decisions.md.
"""

from __future__ import annotations

import os
import re

from mixtral_ft.train.runner import axolotl_env

# transformers' is_kernel pattern (integrations/hub_kernels.py): org/name, optional @revision and :function
_KERNEL = re.compile(r"^[^/:]+/[^/:]+(?:@[^/:]+)?(?::[^/:]+)?$")
# huggingface_hub's reading of a boolean environment variable (constants.py, _is_true)
_TRUE = {"1", "ON", "YES", "TRUE"}


def is_hub_kernel(attn: str) -> bool:
    return _KERNEL.match(attn.strip()) is not None


def parse_kernel(spec: str) -> tuple[str, str | None, int | None]:
    """``org/name[@rev][:fn]`` -> (repo id, revision, version): the revision when given, else the
    major version transformers asks for (``get_attn_kernel_version``)."""
    repo, _, rev_text = spec.split(":", 1)[0].strip().partition("@")
    repo, rev = repo.strip(), rev_text.strip() or None
    if rev is not None:
        return repo, rev, None
    from transformers.integrations.hub_kernels import get_attn_kernel_version

    return repo, None, get_attn_kernel_version(repo)


def fallback_kernel(attn: str) -> str | None:
    """The Hub kernel transformers loads for ``attn`` when its package is missing (None: no fallback)."""
    try:
        from transformers.modeling_flash_attention_utils import FLASH_ATTN_KERNEL_FALLBACK
    except ImportError:
        return None
    return FLASH_ATTN_KERNEL_FALLBACK.get(attn)


def offline_reason(base_model: str | None) -> str | None:
    """Why Axolotl's process will not reach the Hub (its environment: ``train.runner.axolotl_env``), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    if axolotl_env(base_model).get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return "--base-model is a local directory, so mixft sets HF_HUB_OFFLINE=1"
    return None


def kernel_unavailable(spec: str) -> str | None:
    """Why the Hub kernel ``spec`` cannot load without the network, or None when it can (from
    ``$LOCAL_KERNELS`` or the Hugging Face cache, with a build for this torch and backend)."""
    try:
        import kernels  # type: ignore[import-untyped]
        from huggingface_hub import constants
    except ImportError as e:
        return f"the kernels package does not import ({e})"
    repo, revision, version = parse_kernel(spec)
    what = f"{repo} ({f'revision {revision}' if revision else f'version {version}'})"
    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # has_kernel then resolves from LOCAL_KERNELS and the cache only
    try:
        # trust_remote_code=True only silences "Skipping publisher trust check": offline, kernels checks
        # no publisher anyway (kernels/hf_hub.py, _check_trust_remote_code)
        found = kernels.has_kernel(repo, revision=revision, version=version, check_arch=False, trust_remote_code=True)
    except (ValueError, OSError) as e:  # e.g. "Version 3 of '...' is not available in the local cache ..."
        return f"{what} is in neither $LOCAL_KERNELS nor the Hugging Face cache ({str(e).splitlines()[0]})"
    finally:
        constants.HF_HUB_OFFLINE = offline
    if found:
        return None
    return (
        f"{what} is in neither $LOCAL_KERNELS nor the Hugging Face cache as a complete snapshot "
        "with a build for this torch"
    )
