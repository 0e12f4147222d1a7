"""The pipeline file: read through the safe YAML loader, every key checked, every problem reported
as ``FILE:LINE: what`` (all at once; nothing runs or is written).

Format (docs/pipelines.md)::

    name: report                      # optional; default: the file's stem
    about: one line of what it does   # optional
    vars:                             # named variables with defaults; ~ (null) = must be given (--var)
      base_model: ~
      out: .
    presets:                          # optional: values that follow from one variable's value
      model:
        tiny: {steps: "6"}
    env:                              # optional: environment of every stage (the caller's own wins)
      HF_HUB_OFFLINE: "1"
    stages:                           # in the order they run
      - name: prepare_rg
        about: optional line shown when the stage starts
        run: prepare rg ${qa} --out ${out}/prepared/rg
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mixtral_ft.errors import ConfigError, UsageError, did_you_mean
from mixtral_ft.util.yamlsafe import Document, load_document

TOP_KEYS = ("name", "about", "vars", "presets", "env", "stages")
STAGE_KEYS = ("name", "about", "run")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_VARS = ("stages", "mixft")


@dataclass
class StageSpec:
    name: str
    run: str
    line: int  # the stage's first line
    run_line: int
    about: str | None = None


@dataclass
class PipelineFile:
    path: Path
    text: str
    name: str
    about: str | None = None
    vars: dict[str, str | None] = field(default_factory=dict)  # None: no default, must be given
    var_lines: dict[str, int] = field(default_factory=dict)
    presets: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    preset_lines: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    stages: list[StageSpec] = field(default_factory=list)

    def where(self, line: int | None = None) -> str:
        return f"{self.path}:{line}" if line else str(self.path)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    """Walks the node tree, collecting ``file:line: problem`` lines."""

    def __init__(self, doc: Document, path: Path):
        self.doc = doc
        self.path = path
        self.problems: list[str] = []

    def problem(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else _line(node)
        self.problems.append(f"{self.path}:{line}: {message}")

    def mapping(self, node: yaml.Node, what: str, keys: tuple[str, ...] | None) -> dict[str, yaml.Node]:
        """``{key: value node}`` of a mapping node; unknown and repeated keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what}: expected a mapping")
            return {}
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.doc.value_of(key_node)
            if not isinstance(key, str):
                self.problem(key_node, f"{what}: key {key!r} is not a name")
                continue
            if key in out:
                self.problem(key_node, f"{what}: '{key}' is given twice")
            elif keys is not None and key not in keys:
                self.problem(
                    key_node, f"{what}: unknown key '{key}'.{did_you_mean(key, keys)} Known: {', '.join(keys)}"
                )
            out[key] = value_node
        return out

    def text(self, node: yaml.Node, what: str, allow_null: bool = False) -> str | None:
        """A scalar as text (numbers and booleans as written); None for null when allowed."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(
                node,
                f"{what}: expected a single value, not a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}",
            )
            return None
        value = self.doc.value_of(node)
        if value is None:
            if not allow_null:
                self.problem(node, f"{what}: has no value")
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return node.value if isinstance(value, (int, float)) else str(value)


def _read_vars(r: _Reader, node: yaml.Node, pf: PipelineFile) -> None:
    for name, value in r.mapping(node, "vars", None).items():
        if not VAR_RE.match(name) or name in RESERVED_VARS:
            r.problem(
                value, f"vars: '{name}' is not a variable name (letters, digits, '_'; not {', '.join(RESERVED_VARS)})"
            )
            continue
        pf.vars[name] = r.text(value, f"vars.{name}", allow_null=True)
        pf.var_lines[name] = _line(value)


def _read_presets(r: _Reader, node: yaml.Node, pf: PipelineFile) -> None:
    for var, choices in r.mapping(node, "presets", None).items():
        pf.preset_lines[var] = _line(choices)
        if var not in pf.vars:
            r.problem(choices, f"presets: '{var}' is not a variable of vars.{did_you_mean(var, pf.vars)}")
        table: dict[str, dict[str, str]] = {}
        for choice, values in r.mapping(choices, f"presets.{var}", None).items():
            table[choice] = {}
            for key, value in r.mapping(values, f"presets.{var}.{choice}", None).items():
                if key not in pf.vars:
                    r.problem(
                        value, f"presets.{var}.{choice}: '{key}' is not a variable of vars.{did_you_mean(key, pf.vars)}"
                    )
                text = r.text(value, f"presets.{var}.{choice}.{key}")
                if text is not None:
                    table[choice][key] = text
        pf.presets[var] = table


def _read_stages(r: _Reader, node: yaml.Node, pf: PipelineFile) -> None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        r.problem(node, "stages: expected a list of stages (- name: ..., run: ...)")
        return
    seen: dict[str, int] = {}
    for item in node.value:
        keys = r.mapping(item, "stage", STAGE_KEYS)
        if not keys:
            continue
        missing = [k for k in ("name", "run") if k not in keys]
        if missing:
            r.problem(item, f"stage: '{missing[0]}' is missing")
            continue
        name = r.text(keys["name"], "stage name") or ""
        if name and not NAME_RE.match(name):
            r.problem(keys["name"], f"stage name '{name}': letters, digits, '_' and '-', starting with a letter")
        elif name in seen:
            r.problem(keys["name"], f"stage name '{name}' is used twice (first on line {seen[name]})")
        seen[name] = _line(item)
        run = r.text(keys["run"], f"stages.{name}.run") or ""
        about = r.text(keys["about"], f"stages.{name}.about") if "about" in keys else None
        pf.stages.append(StageSpec(name, run, _line(item), _line(keys["run"]), about))


def _read(r: _Reader, root: yaml.Node, pf: PipelineFile) -> None:
    top = r.mapping(root, "pipeline", TOP_KEYS)
    if "stages" not in top:
        r.problem(root, "pipeline: 'stages' is missing")
    if "name" in top:
        pf.name = r.text(top["name"], "name") or pf.name
    if "about" in top:
        pf.about = r.text(top["about"], "about")
    if "vars" in top:
        _read_vars(r, top["vars"], pf)
    if "presets" in top:
        _read_presets(r, top["presets"], pf)
    if "env" in top:
        for key, value in r.mapping(top["env"], "env", None).items():
            text = r.text(value, f"env.{key}")
            if text is not None:
                pf.env[key] = text
    if "stages" in top:
        _read_stages(r, top["stages"], pf)


def read_pipeline(path: Path) -> PipelineFile:
    """Read and check ``path``; ``ConfigError`` lists every problem, one ``FILE:LINE: what`` each."""

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the pipeline file ({e.strerror or e})") from None
    try:
        doc = load_document(text, str(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    pf = PipelineFile(path=path, text=text, name=path.stem)
    if doc.node is None:
        raise ConfigError(f"{path}: empty pipeline file (it needs stages)")
    reader = _Reader(doc, path)
    _read(reader, doc.node, pf)
    if reader.problems:
        raise ConfigError(reader.problems)
    return pf
