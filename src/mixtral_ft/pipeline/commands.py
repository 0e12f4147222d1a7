"""What the runner knows about each mixft command a stage may run: one table, beside the runner.

For every command: which arguments are **inputs** (hashed for the skip rule, and how a stage
comes to depend on another), which are **outputs** (what ``${stages.NAME.OUTPUT}`` names, what
must exist for a stage to be up to date, what its manifest is beside), which options take no
value (to tell an option's value from a positional argument), which flags the runner adds itself
(``--force``, ``--resume``: refused in a stage's text), and how to read from the command's own
manifest that it finished. ``tests/test_pipeline.py`` checks the table against the CLI, so a new
option of a command cannot go unnoticed.

Input kinds: ``path`` (a file or folder the command reads), ``model`` (a local model folder or a
Hub id: hashed only when it is a path on this machine or an earlier stage writes it), ``tagged``
(``[TAG=]PATH``, as ``prepare`` and ``--augment`` take them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.resources import configs_dir

PATH, MODEL, TAGGED = "path", "model", "tagged"
SHORT = {"-o": "--out", "-m": "--model"}  # the short forms the commands accept
_TAG = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class CommandSpec:
    words: tuple[str, ...]
    family: str  # prepare | train | infer | eval | report | models | merge: how it finishes and re-runs
    outputs: Mapping[str, str]  # option -> the output's name in ${stages.NAME.OUTPUT}
    inputs: Mapping[str, str] = field(default_factory=dict)  # option -> PATH | MODEL | TAGGED
    positional: str | None = None  # kind of the positional arguments (inputs), None: it takes none
    flags: frozenset[str] = frozenset()  # options that take no value
    managed: frozenset[str] = frozenset({"--force"})  # flags only the runner adds
    plan: str | None = None  # train | generate | judge: planned by `mixft run --plan`
    plan_copy: tuple[str, ...] = ()  # options handed to `mixft plan` as they are
    plan_data: str | None = None  # the option handed to `mixft plan` once its file exists

    @property
    def name(self) -> str:
        return " ".join(self.words)


_EVAL_FLAGS = frozenset({"--force", "--count-relevance"})
_INFER_COPY = ("--model", "--adapter", "--load-in-4bit", "--batch-size", "--max-new-tokens", "--prompt")

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        ("prepare", "rg"),
        "prepare",
        {"--out": "out"},
        {"--tokenizer": MODEL},
        positional=TAGGED,
        flags=frozenset({"--force", "--skip-invalid", "--number-snippets"}),
    ),
    CommandSpec(
        ("prepare", "tc"),
        "prepare",
        {"--out": "out"},
        {"--augment": TAGGED, "--judgements": PATH, "--template": PATH, "--tokenizer": MODEL},
        positional=TAGGED,
        flags=frozenset({"--force", "--skip-invalid", "--count-relevance"}),
    ),
    *(
        CommandSpec(
            ("train", task),
            "train",
            {"--run-dir": "run_dir"},
            {"--data": PATH, "--base-model": MODEL},
            flags=frozenset({"--dry-run", "--resume", "--probe", "--skip-plan-check"}),
            managed=frozenset({"--resume", "--dry-run"}),
            plan="train",
            plan_copy=("--profile", "--base-model", "--set", "--gpus"),
            plan_data="--data",
        )
        for task in ("rg", "tc")
    ),
    CommandSpec(
        ("generate",),
        "infer",
        {"--out": "out"},
        {"--data": PATH, "--model": MODEL, "--adapter": PATH},
        flags=frozenset({"--force", "--load-in-4bit", "--skip-plan-check"}),
        plan="generate",
        plan_copy=_INFER_COPY,
        plan_data="--data",
    ),
    CommandSpec(
        ("judge",),
        "infer",
        {"--out": "out"},
        {"--responses": PATH, "--model": MODEL, "--adapter": PATH, "--template": PATH},
        flags=frozenset({"--force", "--load-in-4bit", "--skip-plan-check", "--count-relevance", "--no-score"}),
        plan="judge",
        plan_copy=(*_INFER_COPY, "--template"),
        plan_data="--responses",
    ),
    CommandSpec(
        ("eval", "rg"), "eval", {"--out": "out"}, {"--verdicts": PATH, "--checker-eval": PATH}, flags=_EVAL_FLAGS
    ),
    CommandSpec(("eval", "tc"), "eval", {"--out": "out"}, {"--pred": PATH, "--gold": PATH}, flags=_EVAL_FLAGS),
    CommandSpec(("eval", "pipeline"), "eval", {"--out": "out"}, {"--gold": PATH, "--checker": PATH}, flags=_EVAL_FLAGS),
    CommandSpec(
        ("eval", "compare"),
        "eval",
        {"--out": "out"},
        {"--gold": PATH, "--checker-eval": PATH},
        positional=PATH,
        flags=_EVAL_FLAGS,
    ),
    CommandSpec(("report",), "report", {"--out": "out"}, positional=PATH, flags=frozenset({"--force"})),
    CommandSpec(
        ("models", "tiny-mixtral"), "models", {"--out": "out"}, {"--corpus": PATH}, flags=frozenset({"--force"})
    ),
    CommandSpec(("models", "tiny-dense"), "models", {"--out": "out"}, flags=frozenset({"--force"})),
    CommandSpec(("models", "smollm2"), "models", {"--out": "out"}, flags=frozenset({"--force"})),
    CommandSpec(
        ("merge",), "merge", {"--out": "out"}, {"--base-model": MODEL}, positional=PATH, flags=frozenset({"--force"})
    ),
)

# Commands that are not stages, and what to do instead.
NOT_STAGES = {
    "plan": "`mixft run --plan` plans every train, generate and judge stage",
    "run": "a pipeline does not run pipelines",
    "demo": "the demo is itself a pipeline (pipelines/demo-cpu.yml)",
    "config": "`train` renders its config itself; `mixft config render` writes nothing a stage needs",
}


def find_command(tokens: list[str]) -> tuple[CommandSpec, list[str]] | None:
    """The command ``tokens`` start with (``["prepare", "rg", ...]``) and the remaining tokens."""
    for spec in sorted(COMMANDS, key=lambda s: -len(s.words)):
        if tuple(tokens[: len(spec.words)]) == spec.words:
            return spec, tokens[len(spec.words) :]
    return None


@dataclass
class Args:
    """A stage's arguments, split the way the command's parser splits them."""

    options: list[tuple[str, str | None]]  # (--option, value or None for a flag), in order
    positionals: list[str]

    def values(self, option: str) -> list[str]:
        return [v for o, v in self.options if o == option and v is not None]

    def value(self, option: str) -> str | None:
        found = self.values(option)
        return found[-1] if found else None

    def has(self, option: str) -> bool:
        return any(o == option for o, _ in self.options)


def _scan(spec: CommandSpec, tokens: list[str]) -> Iterator[tuple[int | None, str | None, str | None]]:
    """``(index of the value token or None, option or None, value or None)`` for each argument:
    an option with its value, a flag (value None), or a positional (option None)."""
    i = 0
    while i < len(tokens):
        name = SHORT.get(tokens[i], tokens[i])
        if name.startswith("--") and len(name) > 2:
            if "=" in name:
                yield i, name.split("=", 1)[0], name.split("=", 1)[1]
            elif name in spec.flags:
                yield None, name, None
            elif i + 1 < len(tokens):
                yield i + 1, name, tokens[i + 1]
                i += 1
            else:
                raise ValueError(f"{name} needs a value")
        else:
            yield i, None, tokens[i]
        i += 1


def parse_args(spec: CommandSpec, tokens: list[str]) -> Args:
    """Split ``tokens`` into options and positionals; raises ``ValueError`` with what is wrong."""
    options: list[tuple[str, str | None]] = []
    positionals: list[str] = []
    for _i, option, value in _scan(spec, tokens):
        if option is None:
            positionals.append(value or "")
        else:
            options.append((option, value))
    if positionals and spec.positional is None:
        raise ValueError(f"`mixft {spec.name}` takes no positional argument (got {positionals[0]!r})")
    return Args(options, positionals)


def _normal(value: str, kind: str) -> str:
    """A path argument in its plain form (``./prepared/rg`` -> ``prepared/rg``); ``TAG=`` kept; a
    model that is not written as a path (a Hub id) as it is."""
    if kind == TAGGED:
        path = tagged_path(value)
        return value[: len(value) - len(path)] + _normal(path, PATH)
    if not value or (kind == MODEL and not value.startswith(("./", "../", "/"))):
        return value
    return os.path.normpath(value)


def path_tokens(spec: CommandSpec, tokens: list[str]) -> list[str]:
    """``tokens`` with every input and output path in its plain form (what runs and what is shown)."""
    out = list(tokens)
    for i, option, value in _scan(spec, tokens):
        if i is None or value is None:
            continue
        kind = spec.positional if option is None else spec.inputs.get(option, PATH if option in spec.outputs else None)
        if kind is None:
            continue
        new = _normal(value, kind)
        out[i] = new if out[i] == value else f"{out[i].split('=', 1)[0]}={new}"
    return out


def tagged_path(value: str) -> str:
    """``live=chats.jsonl`` -> ``chats.jsonl``; a plain path (or an existing file with '=') as is."""
    if "=" in value and not Path(value).exists():
        tag, rest = value.split("=", 1)
        if _TAG.match(tag) and rest:
            return rest
    return value


def input_values(spec: CommandSpec, args: Args) -> list[tuple[str, str, str]]:
    """``(label, path, kind)`` for every input argument, in order (labels: ``--data``, ``INPUT 2``)."""
    found: list[tuple[str, str, str]] = []
    if spec.positional is not None:
        for n, value in enumerate(args.positionals, 1):
            path = tagged_path(value) if spec.positional == TAGGED else value
            found.append((f"INPUT {n}", path, spec.positional))
    for opt, given in args.options:
        kind = spec.inputs.get(opt)
        if kind is not None and given is not None:
            found.append((opt, tagged_path(given) if kind == TAGGED else given, kind))
    return found


def output_values(spec: CommandSpec, args: Args) -> dict[str, str]:
    """``{output name: path}``; every output option must be given (the runner must know where it writes)."""
    out = {}
    for opt, name in spec.outputs.items():
        value = args.value(opt)
        if value is None:
            raise ValueError(f"give {opt}: the runner must know where `mixft {spec.name}` writes")
        out[name] = value
    return out


def implicit_inputs(spec: CommandSpec, args: Args) -> list[tuple[str, str, str]]:
    """Files a command reads without an argument naming them: ``train``'s base config and hardware
    profile (from the active configs folder), the shipped TC prompt of ``judge``/``prepare tc``
    when no ``--template`` is given."""

    folder = configs_dir()
    if spec.family == "train":
        found = [("config", str(folder / f"{spec.words[1]}.yml"), PATH)]
        profile = args.value("--profile")
        if profile:
            found.append(("profile", str(folder / "profiles" / f"{profile}.yml"), PATH))
        return found
    if spec.words in (("judge",), ("prepare", "tc")) and args.value("--template") is None:
        return [("template", str(folder / "prompts" / "tc_v1.txt"), PATH)]
    return []


# ----------------------------------------------------------------------------- finished or not


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def infer_manifest(out: Path) -> Path:
    """``gens/ft.jsonl`` -> ``gens/ft.jsonl.manifest.json`` (docs/formats.md, section 8)."""
    return out.with_name(out.name + ".manifest.json")


def _unfinished_infer(out: Path) -> str | None:
    manifest = _json(infer_manifest(out))
    if manifest is None:
        return f"{infer_manifest(out)} is missing"
    summary = manifest.get("summary")
    if not isinstance(summary, dict):
        return "its manifest has no summary (the run did not end)"
    if summary.get("stopped"):
        return f"its manifest says it stopped ({summary['stopped']})"
    if summary.get("failed"):
        return f"its manifest says {summary['failed']} row(s) failed"
    return None


def _unfinished_train(run_dir: Path) -> str | None:
    manifest = _json(run_dir / "manifest.json")
    attempts = (manifest or {}).get("attempts")
    if not isinstance(attempts, list) or not attempts or not isinstance(attempts[-1], dict):
        return f"{run_dir / 'manifest.json'} records no attempt"
    outcome = attempts[-1].get("outcome")
    return None if outcome == "finished" else f"its last attempt ended: {outcome or 'without a record'}"


_DONE_FILES = {
    "prepare": ("manifest.json",),
    "eval": ("results.json", "manifest.json"),
    "report": ("report.md", "manifest.json"),
    "merge": ("mixft_merge.json",),
}


def unfinished(spec: CommandSpec, outputs: Mapping[str, str]) -> str | None:
    """None when the command's own records say it finished writing ``outputs``, else why not."""
    path = Path(next(iter(outputs.values())))
    if not path.exists():
        return f"{path} is missing"
    if spec.family == "infer":
        return _unfinished_infer(path)
    if spec.family == "train":
        return _unfinished_train(path)
    if spec.family == "models":
        marker = any((path / m).exists() for m in ("mixft_tiny.json", "mixft_model.json"))
        return None if marker and (path / "config.json").exists() else f"{path} holds no finished model"
    missing = [name for name in _DONE_FILES[spec.family] if not (path / name).exists()]
    return f"{path / missing[0]} is missing" if missing else None
