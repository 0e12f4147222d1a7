"""``mixft merge``: fold a run's LoRA adapter into its base model, shard by shard.

The merged model is exactly the base plus the LoRA delta, in the base's stored dtype, computed per
targeted tensor with one tensor in memory at a time and written to shards with the base's names, layout
and index; every other tensor is copied byte for byte and nothing is quantized. Which checkpoint tensor
each LoRA pair adds to is read from PEFT on the meta device and mapped to the on-disk names. The method
and how it differs from Axolotl's merge: docs/design/training-decisions.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import MissingDependencyError, MixftError, PreflightError, UsageError
from mixtral_ft.train.rundir import RunPaths, RunState, run_status
from mixtral_ft.util.atomic import check_output_dir, guard_destination, staged_dir
from mixtral_ft.util.lock import output_lock
from mixtral_ft.util.manifest import Manifest, file_entry
from mixtral_ft.util.yamlsafe import safe_load

MERGED_NAME = "merged"
MANIFEST_NAME = "mixft_merge.json"
INDEX_NAME = "model.safetensors.index.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
_TOKENIZER_FILES = re.compile(
    r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|chat_template\.(jinja|json)"
    r"|vocab\..*|merges\.txt|spiece\.model)$"
)
_FLOAT_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_CHUNK = 64 << 20


@dataclass
class MergeResult:
    merged_dir: Path
    wall_s: float
    merged_tensors: int
    total_tensors: int


# ---------------------------------------------------------------------------- inputs


def _load_config(paths: RunPaths) -> dict:
    if not paths.config.exists():
        raise UsageError(f"{paths.root}: not a mixft run directory (no axolotl.yml)")
    return safe_load(paths.config.read_text(encoding="utf-8"), str(paths.config)) or {}


def prequantized_4bit(base_dir: Path) -> bool:
    """True when a base model directory is stored already quantized to 4-bit (bitsandbytes)."""
    cfg_path = base_dir / "config.json"
    if not cfg_path.exists():
        return str(base_dir).lower().endswith(("-bnb-4bit", "-4bit"))
    qc = json.loads(cfg_path.read_text(encoding="utf-8")).get("quantization_config") or {}
    return bool(
        qc.get("load_in_4bit")
        or qc.get("quant_method") in ("bitsandbytes_4bit",)
        or (qc.get("quant_method") == "bitsandbytes" and not qc.get("load_in_8bit"))
    )


def resolve_base_dir(base_model: str) -> Path:
    """A local directory, or a hub id already in the local Hugging Face cache (nothing is downloaded)."""
    path = Path(base_model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(base_model, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError, OSError):  # not a repo id / not cached: no local copy
        raise UsageError(
            f"base model {base_model}: no local copy (not a directory, not in the Hugging Face cache); "
            f"download it (`hf download {base_model} --local-dir DIR`) and pass --base-model DIR"
        ) from None


def base_shards(base_dir: Path) -> tuple[list[str], Path | None]:
    """The base's safetensors shard file names, and its index file when it has one."""
    index = base_dir / INDEX_NAME
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        return sorted(set(weight_map.values())), index
    if (base_dir / "model.safetensors").exists():
        return ["model.safetensors"], None
    raise UsageError(f"{base_dir}: no model.safetensors or {INDEX_NAME}; mixft merge reads safetensors checkpoints")


def check_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """Refuse, in one line each, what a LoRA-delta merge cannot represent."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    where = f"{adapter_dir / 'adapter_config.json'}"
    if cfg.get("peft_type", "LORA") != "LORA":
        raise UsageError(f"{where}: peft_type {cfg.get('peft_type')!r}; mixft merge folds LoRA adapters only")
    for key, why in (
        ("use_dora", "DoRA rescales the merged weight by a learned norm"),
        ("lora_bias", "the adapter trains biases the base does not have"),
        ("modules_to_save", "the adapter saves whole replacement modules, not LoRA deltas"),
        ("trainable_token_indices", "the adapter trains embedding rows, not LoRA deltas"),
        ("layer_replication", "the adapter duplicates layers"),
        ("fan_in_fan_out", "the base stores Conv1D-style transposed weights"),
    ):
        if cfg.get(key):
            raise UsageError(f"{where}: {key} is set ({why}); mixft merge folds plain LoRA deltas only")
    return cfg


# ---------------------------------------------------------------------------- the LoRA layers and their tensors


@dataclass
class Target:
    """One LoRA pair and where its delta goes: ``slices`` maps on-disk tensor names to the
    part of the (runtime-shaped) delta each one takes: ``None`` (all of it) or ``(expert, row0, row1)``."""

    adapter_key: str  # e.g. base_model.model.model.layers.0.self_attn.q_proj
    runtime_name: str  # e.g. model.layers.0.self_attn.q_proj.weight
    kind: str  # "linear" | "experts"
    scale: float
    num_experts: int = 1
    swapped: bool = False  # PEFT ParamWrapper's _did_swap_in_out_features
    slices: dict[str, tuple[int, int, int] | None] = field(default_factory=dict)


def _lora_layers(base_dir: Path, adapter_dir: Path) -> list[Target]:
    """Apply the adapter's LoraConfig to the base architecture on the meta device and list its LoRA layers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer, ParamWrapper
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(base_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    lora_config = LoraConfig.from_pretrained(str(adapter_dir))
    lora_config.inference_mode = True
    peft_model = get_peft_model(model, lora_config)
    targets = []
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in getattr(module, "lora_A", {}):
            continue
        path = name.removeprefix("base_model.model.")
        while path.endswith(".base_layer"):
            path = path.removesuffix(".base_layer")
        scale = float(module.scaling["default"])
        if isinstance(module, ParamWrapper):
            targets.append(
                Target(
                    name,
                    f"{path}.{module.parameter_name}",
                    "experts" if module.num_experts > 1 else "linear",
                    scale,
                    num_experts=module.num_experts,
                    swapped=bool(module._did_swap_in_out_features),
                )
            )
        elif isinstance(module, LoraLinear):
            targets.append(Target(name, f"{path}.weight", "linear", scale))
        else:
            raise UsageError(
                f"{adapter_dir}: LoRA on {path} ({type(module).__name__}); mixft merge folds LoRA on "
                "linear layers and fused expert parameters only"
            )
    return targets


def _renamings(model_type: str) -> list[tuple[str, str]]:
    """The (checkpoint pattern -> runtime pattern) key renamings transformers applies on load."""
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import WeightConverter
    except ImportError:  # pragma: no cover - depends on the transformers version
        return []
    out = []
    for entry in get_checkpoint_conversion_mapping(model_type) or []:
        if isinstance(entry, WeightConverter):
            continue
        for src, tgt in zip(entry.source_patterns, entry.target_patterns):
            out.append((src, tgt))
    return out


def _runtime_name(disk_key: str, renamings: list[tuple[str, str]]) -> str:
    for src, tgt in renamings:
        disk_key = re.sub(src, tgt, disk_key)
    return disk_key


_MIXTRAL_EXPERT = re.compile(r"^(?P<prefix>.+\.experts)\.(?P<e>\d+)\.(?P<w>w[123])\.weight$")


def map_to_disk(targets: list[Target], headers: dict[str, dict[str, Any]], model_type: str) -> None:
    """Fill each target's ``slices`` with on-disk tensor names; refuse what cannot be mapped."""
    renamings = _renamings(model_type)
    by_runtime: dict[str, str] = {}
    per_expert: dict[str, dict[tuple[int, str], str]] = {}
    for key in headers:
        by_runtime.setdefault(_runtime_name(key, renamings), key)
        m = _MIXTRAL_EXPERT.match(key)
        if m:
            prefix = _runtime_name(m["prefix"], renamings)
            per_expert.setdefault(prefix, {})[(int(m["e"]), m["w"])] = key
    for t in targets:
        if t.runtime_name in headers:
            t.slices = {t.runtime_name: None}
        elif t.runtime_name in by_runtime:
            t.slices = {by_runtime[t.runtime_name]: None}
        elif t.kind == "experts":
            module, _, param = t.runtime_name.rpartition(".")
            experts = per_expert.get(module)
            if model_type != "mixtral" or not experts or param not in ("gate_up_proj", "down_proj"):
                raise UsageError(
                    f"LoRA on {t.runtime_name}: the checkpoint stores these experts in a layout mixft merge does not "
                    "map (it maps fused tensors and Mixtral's per-expert w1/w3/w2)"
                )
            t.slices = {}
            for e in range(t.num_experts):
                if param == "down_proj":
                    t.slices[experts[(e, "w2")]] = (e, 0, -1)
                else:
                    rows = headers[experts[(e, "w1")]]["shape"][0]
                    t.slices[experts[(e, "w1")]] = (e, 0, rows)
                    t.slices[experts[(e, "w3")]] = (e, rows, 2 * rows)
        else:
            raise UsageError(
                f"LoRA on {t.runtime_name}: no such tensor in the base checkpoint; is this the adapter's base?"
            )


def delta_part(target: Target, lora_a, lora_b, where: tuple[int, int, int] | None):
    """The float32 delta one on-disk tensor takes from one LoRA pair, as PEFT computes it
    (``peft/tuners/lora/layer.py``: ``Linear.get_delta_weight`` is ``B @ A * scale``;
    ``ParamWrapper.get_delta_weight`` is ``einsum("o r e, e r i -> e o i", B, A) * scale`` for a
    ``[experts, out, in]`` parameter), for one expert and a row range only, so a Mixtral expert
    delta never exists whole in memory."""
    import torch

    a, b = lora_a.to(torch.float32), lora_b.to(torch.float32)
    if target.kind == "linear":
        return (b @ a) * target.scale
    a = a.reshape(target.num_experts, -1, a.shape[-1])  # experts x rank x in
    b = b.reshape(b.shape[0], -1, target.num_experts)  # out x rank x experts
    if where is None:
        pattern = "o r e, e r i -> e o i" if target.swapped else "o r e, e r i -> e i o"
        return torch.einsum(pattern, b, a) * target.scale
    e, r0, r1 = where
    if target.swapped:  # [out, in] per expert: only the rows this tensor takes are computed
        rows = b[:, :, e] if r1 == -1 else b[r0:r1, :, e]
        return (rows @ a[e]) * target.scale
    d = (b[:, :, e] @ a[e]).T * target.scale
    return d if r1 == -1 else d[r0:r1]


def _part_shape(target: Target, a_shape: list[int], b_shape: list[int], where) -> list[int]:
    if target.kind == "linear":
        return [b_shape[0], a_shape[1]]
    out_in = [b_shape[0], a_shape[-1]] if target.swapped else [a_shape[-1], b_shape[0]]
    if where is None:
        return [target.num_experts, *out_in]
    _, r0, r1 = where
    return out_in if r1 == -1 else [r1 - r0, out_in[1]]


# ---------------------------------------------------------------------------- safetensors


def read_header(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The raw header bytes (length prefix included) and the parsed header of a safetensors file."""
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise UsageError(f"{path}: not a safetensors file")
        (n,) = struct.unpack("<Q", prefix)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        raise UsageError(f"{path}: not a safetensors file (unreadable header)") from None
    header.pop("__metadata__", None)
    return prefix + raw, header


def _merge_shard(src: Path, dst: Path, header_bytes: bytes, header: dict[str, Any], updates: dict[str, Any]) -> str:
    """Copy ``src`` to ``dst``, replacing the bytes of each tensor in ``updates`` (name -> callable
    returning the merged tensor); return the SHA-256 of what was written."""
    sha = hashlib.sha256(header_bytes)
    start = len(header_bytes)
    spans = sorted((header[name]["data_offsets"][0], header[name]["data_offsets"][1], name) for name in updates)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(header_bytes)
        fin.seek(start)
        pos = 0

        def copy_until(end: int | None) -> None:
            nonlocal pos
            while end is None or pos < end:
                chunk = fin.read(_CHUNK if end is None else min(_CHUNK, end - pos))
                if not chunk:
                    if end is not None:
                        raise UsageError(f"{src}: truncated safetensors file")
                    return
                fout.write(chunk)
                sha.update(chunk)
                pos += len(chunk)

        for begin, end, name in spans:
            copy_until(begin)
            raw = fin.read(end - begin)
            merged = updates[name](raw)
            if len(merged) != end - begin:
                raise AssertionError(f"{name}: merged tensor has {len(merged)} bytes, expected {end - begin}")
            fout.write(merged)
            sha.update(merged)
            pos = end
        copy_until(None)
    return sha.hexdigest()


def _merged_bytes(info: dict[str, Any], parts: list[tuple[Target, Any, Any, Any]]):
    """A function of the stored bytes: ``W + sum(deltas)`` in float32, rounded once to the stored dtype."""
    import torch

    dtype = getattr(torch, _FLOAT_DTYPES[info["dtype"]])
    shape = info["shape"]

    def apply(raw: bytes) -> bytes:
        w = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).to(torch.float32)
        for target, lora_a, lora_b, where in parts:
            w += delta_part(target, lora_a, lora_b, where)
        return w.to(dtype).contiguous().view(torch.uint8).numpy().tobytes()

    return apply


# ---------------------------------------------------------------------------- the merge


def merge(run_dir: Path, out: Path | None = None, force: bool = False, base_model: str | None = None) -> MergeResult:
    """Write base + LoRA delta to ``out`` (default ``RUN_DIR/merged``) atomically; see the module docstring."""
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            "mixft merge needs torch, transformers, peft: pip install 'mixtral-ft[train]'"
        ) from e

    started = time.monotonic()
    paths = RunPaths(Path(run_dir))
    cfg = _load_config(paths)
    adapter_dir = paths.output
    if not (adapter_dir / "adapter_config.json").exists():
        raise UsageError(f"{adapter_dir}: no LoRA adapter (adapter_config.json); has the run finished?")
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        raise UsageError(f"{adapter_dir}: no adapter_model.safetensors; mixft merge reads safetensors adapters")
    out = Path(out) if out else paths.root / MERGED_NAME
    check_output_dir(out, force)
    base_name = base_model or str(cfg.get("base_model") or "")
    if not base_name:
        raise UsageError(f"{paths.config}: base_model: missing; pass --base-model DIR")
    base_dir = resolve_base_dir(base_name)
    if prequantized_4bit(base_dir):
        raise PreflightError(
            f"base model {base_name} is stored in 4-bit; merging into it would round the merged weights to 4-bit. "
            "Merge against the full-precision base: --base-model DIR"
        )
    guard_destination(out, [paths.root, base_dir])  # never the run or the base model
    # The run directory's lock: no `train` may write the adapter while it is read. `staged_dir` takes out's.
    with output_lock(paths.root, "run directory"):
        _check_finished(paths)
        return _merge_locked(paths, out, force, base_name, base_dir, adapter_dir, weights, started)


def _check_finished(paths: RunPaths) -> None:
    """Merge only a finished run: Axolotl pre-saves adapter_config.json at the start and saves a
    partly trained adapter on Ctrl-C, so an adapter in output/ alone does not mean it is done."""
    status = run_status(paths.root)
    if status.state is not RunState.FINISHED:
        raise UsageError(
            f"{paths.root}: {status.describe()}; its adapter is not the finished one. Finish the run "
            f"first (`mixft train … --run-dir {paths.root} --resume`), then merge"
        )


@dataclass
class _BaseCheckpoint:
    """The base model's safetensors shards, read as far as their headers."""

    dir: Path
    shards: list[str]
    index: Path | None
    raw_headers: dict[str, tuple[bytes, dict[str, Any]]]  # shard -> (header bytes, parsed header)
    headers: dict[str, dict[str, Any]]  # every tensor -> its header entry and its shard

    @property
    def bytes(self) -> int:
        return sum((self.dir / s).stat().st_size for s in self.shards)


def _read_base(base_dir: Path) -> _BaseCheckpoint:
    shards, index = base_shards(base_dir)
    raw_headers: dict[str, tuple[bytes, dict[str, Any]]] = {}
    headers: dict[str, dict[str, Any]] = {}
    for shard in shards:
        raw, header = read_header(base_dir / shard)
        raw_headers[shard] = (raw, header)
        for name, info in header.items():
            headers[name] = dict(info, shard=shard)
    return _BaseCheckpoint(base_dir, shards, index, raw_headers, headers)


def _check_space(out: Path, need: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < need + (1 << 30):
        raise PreflightError(
            f"{out.parent}: {free / 2**30:.1f} GiB free; the merged model needs {need / 2**30:.1f} GiB (+1 GiB margin)"
        )


def _load_lora(weights: Path, targets: list[Target]) -> dict[str, Any]:
    """The adapter's tensors, which must be exactly the LoRA pairs of ``targets``."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as fh:
        lora = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
    wanted = {f"{t.adapter_key}.lora_{ab}.weight" for t in targets for ab in "AB"}
    if set(lora) - wanted:
        extra = sorted(set(lora) - wanted)
        raise UsageError(
            f"{weights}: {len(extra)} tensor(s) match no LoRA layer of the base (first: {extra[0]}); "
            "is this the adapter's base model?"
        )
    if wanted - set(lora):
        raise UsageError(f"{weights}: missing {min(wanted - set(lora))}")
    return lora


def _deltas_by_tensor(
    targets: list[Target], lora: dict[str, Any], headers: dict[str, dict[str, Any]]
) -> dict[str, list[tuple[Target, Any, Any, Any]]]:
    """On-disk tensor name -> the LoRA pairs (and the part of each) whose deltas it takes; refuses
    a delta that does not fit its tensor's dtype or shape."""
    per_tensor: dict[str, list[tuple[Target, Any, Any, Any]]] = {}
    for t in targets:
        lora_a, lora_b = lora[f"{t.adapter_key}.lora_A.weight"], lora[f"{t.adapter_key}.lora_B.weight"]
        for disk_name, where in t.slices.items():
            info = headers[disk_name]
            if info["dtype"] not in _FLOAT_DTYPES:
                raise UsageError(
                    f"{disk_name}: stored as {info['dtype']}; mixft merge adds deltas to float tensors only"
                )
            shape = _part_shape(t, list(lora_a.shape), list(lora_b.shape), where)
            if shape != list(info["shape"]):
                raise UsageError(
                    f"LoRA on {t.runtime_name}: its delta {shape} does not fit {disk_name} {info['shape']}; "
                    "is this the adapter's base model?"
                )
            per_tensor.setdefault(disk_name, []).append((t, lora_a, lora_b, where))
    return per_tensor


def _merge_locked(
    paths: RunPaths,
    out: Path,
    force: bool,
    base_name: str,
    base_dir: Path,
    adapter_dir: Path,
    weights: Path,
    started: float,
) -> MergeResult:
    """``merge``'s work while it holds the run directory's lock: check the inputs, then stream
    every shard into a staged directory that replaces ``out`` whole."""
    adapter_cfg = check_adapter_config(adapter_dir)
    base = _read_base(base_dir)
    need = base.bytes
    _check_space(out, need)
    model_type = json.loads((base_dir / "config.json").read_text(encoding="utf-8")).get("model_type", "")
    targets = _lora_layers(base_dir, adapter_dir)
    map_to_disk(targets, base.headers, model_type)
    per_tensor = _deltas_by_tensor(targets, _load_lora(weights, targets), base.headers)
    try:
        with staged_dir(out, force=force, inputs=[paths.root, base_dir], needed=need) as stage:
            shard_records = _write_shards(base, per_tensor, stage)
            if base.index is not None:
                shutil.copyfile(base.index, stage / INDEX_NAME)  # same names, shapes and dtypes: the same index
            _copy_side_files(base_dir, adapter_dir, stage)
            manifest = _merge_manifest(paths, base_name, base, adapter_dir, weights, adapter_cfg, shard_records)
            manifest.summary = {
                "lora_layers": len(targets),
                "merged_tensors": len(per_tensor),
                "total_tensors": len(base.headers),
                "stored_dtypes": _dtype_counts(base.headers),
                "wall_s": round(time.monotonic() - started, 1),
            }
            manifest.write(stage / MANIFEST_NAME)
    except OSError as e:
        raise MixftError(f"{out}: writing the merged model failed, nothing was written: {e}") from None
    return MergeResult(
        merged_dir=out,
        wall_s=time.monotonic() - started,
        merged_tensors=len(per_tensor),
        total_tensors=len(base.headers),
    )


def _write_shards(base: _BaseCheckpoint, per_tensor: dict[str, list], stage: Path) -> list[dict[str, Any]]:
    """Each base shard to ``stage``, its targeted tensors merged; a record of each shard written."""
    records: list[dict[str, Any]] = []
    for shard in base.shards:
        raw, header = base.raw_headers[shard]
        updates = {name: _merged_bytes(header[name], per_tensor[name]) for name in header if name in per_tensor}
        sha = _merge_shard(base.dir / shard, stage / shard, raw, header, updates)
        records.append(
            {"file": shard, "sha256": sha, "bytes": (stage / shard).stat().st_size, "merged_tensors": len(updates)}
        )
    return records


def _dtype_counts(headers: dict[str, dict[str, Any]]) -> dict[str, int]:
    dtypes: dict[str, int] = {}
    for info in headers.values():
        dtypes[info["dtype"]] = dtypes.get(info["dtype"], 0) + 1
    return dtypes


def _merge_manifest(
    paths: RunPaths,
    base_name: str,
    base: _BaseCheckpoint,
    adapter_dir: Path,
    weights: Path,
    adapter_cfg: dict[str, Any],
    shard_records: list[dict[str, Any]],
) -> Manifest:
    """The merged model's manifest: method, run, base, adapter and LoRA settings, inputs, shards."""
    return Manifest(
        kind="merge",
        settings={
            "method": "streaming safetensors merge: W' = to_stored_dtype(float32(W) + scale * B @ A); "
            "untargeted tensors copied byte for byte; nothing quantized",
            "run_dir": str(paths.root.resolve()),
            "base_model": base_name,
            "base_dir": str(base.dir.resolve()),
            "adapter": str(adapter_dir.resolve()),
            "lora": {
                "r": adapter_cfg.get("r"),
                "lora_alpha": adapter_cfg.get("lora_alpha"),
                "use_rslora": bool(adapter_cfg.get("use_rslora")),
                "target_modules": adapter_cfg.get("target_modules"),
                "target_parameters": adapter_cfg.get("target_parameters"),
            },
        },
        inputs=[file_entry(weights.resolve(), role="adapter")]
        + [
            file_entry((base.dir / name).resolve(), role="base config")
            for name in ("config.json", INDEX_NAME)
            if (base.dir / name).exists()
        ],
        outputs={
            r["file"]: {
                "path": r["file"],
                "sha256": r["sha256"],
                "bytes": r["bytes"],
                "merged_tensors": r["merged_tensors"],
            }
            for r in shard_records
        },
    )


def _copy_side_files(base_dir: Path, adapter_dir: Path, stage: Path) -> None:
    """config, generation config and tokenizer files of the base (top level, no weights, no hidden
    files); then the tokenizer Axolotl saved beside the adapter, which is what the hf backend
    uses for an adapter (models/loading.py)."""
    for src in sorted(base_dir.iterdir()):
        if (
            src.is_file()
            and not src.name.startswith(".")
            and not src.name.endswith(_WEIGHT_SUFFIXES)
            and src.name not in (INDEX_NAME, MANIFEST_NAME)
        ):
            shutil.copyfile(src, stage / src.name)
    if (adapter_dir / "tokenizer_config.json").exists():
        for src in sorted(adapter_dir.iterdir()):
            if src.is_file() and _TOKENIZER_FILES.match(src.name):
                shutil.copyfile(src, stage / src.name)
