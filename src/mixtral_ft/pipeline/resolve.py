"""From a checked pipeline file to runnable stages: variables, presets, ``--var`` and ``--out``,
``${...}`` substitution, each stage's command split by the command table, and the dependency
graph (a stage depends on another when it reads what the other writes, by a ``${stages.X.Y}``
reference or by path). Every problem is ``FILE:LINE: what``; nothing is run or written.

Substitution: ``${name}`` is a variable, ``${stages.NAME.OUTPUT}`` an earlier stage's output
(``out``, ``run_dir``), ``${mixft.data}`` the bundled sample data folder; ``$${`` is a literal
``${``. A variable's value is text, never parsed as YAML. Values are substituted into the tokens
of a stage's command after it is split like a shell line, so a value with spaces stays one
argument.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mixtral_ft.errors import ConfigError, MixftError, UsageError, did_you_mean
from mixtral_ft.pipeline.commands import (
    COMMANDS,
    MODEL,
    NOT_STAGES,
    PATH,
    TAGGED,
    Args,
    CommandSpec,
    find_command,
    implicit_inputs,
    input_values,
    output_values,
    parse_args,
    path_tokens,
)
from mixtral_ft.pipeline.schema import PipelineFile, StageSpec
from mixtral_ft.resources import data_dir
from mixtral_ft.util.yamlsafe import safe_load

_REF = re.compile(r"\$(\$?)\{([^{}]*)\}")
_STAGE_REF = re.compile(r"\$\{stages\.([^.{}]+)")

ArgvCheck = Callable[[list[str]], str | None]  # the CLI's parser: None, or what is wrong with argv


@dataclass
class Stage:
    name: str
    index: int  # 0-based position in the file
    line: int
    spec: CommandSpec
    argv: list[str]  # the command (``prepare rg ...``) without ``mixft`` and without the runner's flags
    args: Args
    inputs: list[tuple[str, str, str]]  # (label, path, kind), the implicit ones last
    outputs: dict[str, str]  # output name -> path
    about: str | None = None
    deps: list[str] = field(default_factory=list)  # earlier stages it reads from, in order
    paths: list[tuple[str, str]] = field(default_factory=list)  # (label, path) of the inputs that are files/folders
    sources: dict[str, str] = field(default_factory=dict)  # input label -> the stage that writes it

    @property
    def output(self) -> Path:
        """The stage's one output (every command in the table has one)."""
        return Path(next(iter(self.outputs.values())))


@dataclass
class Pipeline:
    file: PipelineFile
    vars: dict[str, str]
    out: Path
    env: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def downstream(self, name: str) -> list[str]:
        """Every stage that reads, directly or not, from ``name``."""
        found: list[str] = []
        for s in self.stages:
            if any(d == name or d in found for d in s.deps):
                found.append(s.name)
        return found


def builtins() -> dict[str, str]:
    return {"mixft.data": str(data_dir())}


def substitute(text: str, lookup: Callable[[str], str]) -> str:
    return _REF.sub(lambda m: "${" + m.group(2) + "}" if m.group(1) else lookup(m.group(2).strip()), text)


# ----------------------------------------------------------------------------- variables


def _raw_values(pf: PipelineFile, overrides: dict[str, str]) -> dict[str, str | None]:
    unknown = [k for k in overrides if k not in pf.vars]
    if unknown:
        k = unknown[0]
        raise UsageError(
            f"--var {k}: {pf.path} has no variable '{k}'.{did_you_mean(k, pf.vars)} "
            f"Its variables: {', '.join(pf.vars) or 'none'}"
        )
    raw: dict[str, str | None] = dict(pf.vars)
    for var, table in pf.presets.items():
        choice = overrides.get(var, pf.vars.get(var))
        if choice is None:
            continue
        if choice not in table:
            where = f"--var {var}={choice}" if var in overrides else f"{pf.where(pf.var_lines.get(var))}: {var}"
            raise UsageError(f"{where}: not one of {', '.join(table)} (presets.{var}).{did_you_mean(choice, table)}")
        raw.update(table[choice])
    raw.update(overrides)
    missing = [k for k, v in raw.items() if v is None]
    if missing:
        raise UsageError(
            "; ".join(
                f"{pf.where(pf.var_lines.get(k))}: variable {k} has no value: give --var {k}=..." for k in missing
            )
        )
    return raw


def resolve_vars(pf: PipelineFile, overrides: dict[str, str]) -> dict[str, str]:
    """Defaults < the presets their variables select < ``--var``; then ``${...}`` between variables."""
    raw = _raw_values(pf, overrides)
    fixed = builtins()
    done: dict[str, str] = {}

    def get(name: str, chain: tuple[str, ...]) -> str:
        if name in done:
            return done[name]
        where = pf.where(pf.var_lines.get(chain[-1] if chain else name))
        if name in chain:
            raise ConfigError(f"{where}: variables refer to each other: {' -> '.join((*chain, name))}")

        def lookup(ref: str) -> str:
            if ref in fixed:
                return fixed[ref]
            if ref.startswith("stages."):
                raise ConfigError(f"{where}: variable {name}: ${{{ref}}}: a variable cannot name a stage's output")
            if ref not in raw:
                hint = did_you_mean(ref, [*raw, *fixed])
                raise ConfigError(f"{where}: variable {name}: unknown variable ${{{ref}}}.{hint}")
            return get(ref, (*chain, name))

        done[name] = substitute(raw[name] or "", lookup)
        return done[name]

    return {name: get(name, ()) for name in raw}


# ----------------------------------------------------------------------------- stages


def _stage_refs(pf: PipelineFile) -> list[str]:
    """Problems with ``${stages.X...}`` references: unknown stages, cycles, references forward."""
    index = {s.name: i for i, s in enumerate(pf.stages)}
    refs = {s.name: [m.group(1) for m in _STAGE_REF.finditer(s.run)] for s in pf.stages}
    problems = []
    for s in pf.stages:
        for ref in refs[s.name]:
            if ref not in index:
                hint = did_you_mean(ref, index)
                problems.append(f"{pf.where(s.run_line)}: stage {s.name}: no stage '{ref}' in this pipeline.{hint}")
    if problems:
        return problems
    graph = {name: [r for r in rs if r in index] for name, rs in refs.items()}
    cycle = find_cycle(graph, [s.name for s in pf.stages])
    if cycle:
        lines = ", ".join(f"{n} (line {pf.stages[index[n]].line})" for n in cycle[:-1])
        return [
            f"{pf.where(pf.stages[index[cycle[0]]].run_line)}: stages depend on each other in a cycle: "
            f"{' -> '.join(cycle)} ({lines})"
        ]
    for s in pf.stages:
        for ref in refs[s.name]:
            if index[ref] >= index[s.name]:
                problems.append(
                    f"{pf.where(s.run_line)}: stage {s.name} reads stage {ref}'s output, but {ref} runs "
                    f"{'as the same stage' if ref == s.name else 'after it'} (line {pf.stages[index[ref]].line}): "
                    "stages run in the order of the file"
                )
    return problems


def find_cycle(graph: dict[str, list[str]], order: list[str]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` in ``graph`` (name -> names it depends on), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return [*path[path.index(m) :], m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in order:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _split(spec_stage: StageSpec, pf: PipelineFile) -> list[str]:
    try:
        tokens = shlex.split(spec_stage.run)
    except ValueError as e:
        raise ConfigError(
            f"{pf.where(spec_stage.run_line)}: stage {spec_stage.name}: cannot split the command: {e}"
        ) from None
    return tokens[1:] if tokens[:1] == ["mixft"] else tokens


def _command(tokens: list[str], where: str, name: str) -> tuple[CommandSpec, list[str]]:
    found = find_command(tokens)
    if found is not None:
        return found
    head = tokens[0] if tokens else ""
    if head in NOT_STAGES:
        raise ConfigError(f"{where}: stage {name}: `mixft {head}` is not a stage: {NOT_STAGES[head]}")

    names = sorted({s.name for s in COMMANDS})
    shown = " ".join(tokens[:2])
    raise ConfigError(
        f"{where}: stage {name}: `mixft {shown}` is not a command a stage can run.{did_you_mean(shown, names)} "
        f"Stages run: {', '.join(names)}"
    )


def _resolve_stage(
    s: StageSpec, index: int, pf: PipelineFile, lookup: Callable[[str, str], str], check: ArgvCheck | None
) -> Stage:
    where = pf.where(s.run_line)
    tokens = [substitute(t, lambda ref: lookup(ref, s.name)) for t in _split(s, pf)]
    spec, rest = _command(tokens, where, s.name)
    try:
        rest = path_tokens(spec, rest)
        args = parse_args(spec, rest)
        outputs = output_values(spec, args)
    except ValueError as e:
        raise ConfigError(f"{where}: stage {s.name}: {e}") from None
    managed = sorted(o for o in spec.managed if args.has(o))
    if managed:
        raise ConfigError(
            f"{where}: stage {s.name}: {managed[0]} is the runner's to add (it replaces or continues an output "
            "only when the stage has to run again); remove it"
        )
    argv = [*spec.words, *rest]
    _check_overrides(args, where, s.name)
    problem = check(argv) if check is not None else None
    if problem:
        raise ConfigError(f"{where}: stage {s.name}: `mixft {shlex.join(argv)}`: {problem}")
    inputs = input_values(spec, args) + implicit_inputs(spec, args)
    about = substitute(s.about, lambda ref: lookup(ref, s.name)) if s.about else None
    return Stage(s.name, index, s.line, spec, argv, args, inputs, outputs, about)


def _check_overrides(args: Args, where: str, name: str) -> None:
    """``--set KEY=VALUE`` values through the YAML loader the command uses, before anything runs: a
    hostile value (from the file or a ``--var``) is refused here, with the stage's line."""

    for value in args.values("--set"):
        key, _, raw = value.partition("=")
        try:
            safe_load(raw, f"--set {key}")
        except yaml.YAMLError as e:
            raise ConfigError(
                f"{where}: stage {name}: --set {key}: not valid YAML: {getattr(e, 'problem', e)}"
            ) from None
        except MixftError as e:
            raise ConfigError(f"{where}: stage {name}: {e}") from None


def resolve_stages(pf: PipelineFile, values: dict[str, str], check: ArgvCheck | None) -> list[Stage]:
    problems = _stage_refs(pf)
    if problems:
        raise ConfigError(problems)
    fixed = builtins()
    stages: list[Stage] = []

    def lookup(ref: str, who: str) -> str:
        if ref in values:
            return values[ref]
        if ref in fixed:
            return fixed[ref]
        if ref.startswith("stages."):
            parts = ref.split(".")
            done = {st.name: st for st in stages}
            if len(parts) == 3 and parts[1] in done:
                outs = done[parts[1]].outputs
                if parts[2] in outs:
                    return outs[parts[2]]
                raise ValueError(f"${{{ref}}}: stage {parts[1]} has no output '{parts[2]}' (it has: {', '.join(outs)})")
            raise ValueError(f"${{{ref}}}: expected ${{stages.NAME.OUTPUT}}")
        raise ValueError(f"unknown variable ${{{ref}}}.{did_you_mean(ref, [*values, *fixed])}")

    for i, s in enumerate(pf.stages):
        try:
            stages.append(_resolve_stage(s, i, pf, lookup, check))
        except ValueError as e:
            problems.append(f"{pf.where(s.run_line)}: stage {s.name}: {e}")
        except ConfigError as e:
            problems.extend(e.errors)
    if problems:
        raise ConfigError(problems)
    return stages


# ----------------------------------------------------------------------------- the graph by paths


def _abs(path: str) -> str:
    return os.path.abspath(path)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)


def _is_path(path: str, kind: str, written: set[str]) -> bool:
    """A ``model`` input is a path only when it is on this machine or a stage writes it."""
    if kind in (PATH, TAGGED):
        return True
    return kind == MODEL and (os.path.exists(path) or any(_overlaps(_abs(path), w) for w in written))


def link_stages(pf: PipelineFile, stages: list[Stage], out: Path) -> None:
    """Set each stage's ``deps``; refuse outputs outside ``out``, outputs written twice, cycles and
    reads of what a later stage writes."""
    problems = []
    root = _abs(str(out))
    writers: dict[str, Stage] = {}
    for s in stages:
        for o in s.outputs.values():
            a = _abs(o)
            if a != root and not a.startswith(root.rstrip(os.sep) + os.sep):
                problems.append(
                    f"{pf.where(s.line)}: stage {s.name} writes {o}, outside the pipeline's output folder {out}"
                )
            clash = next((w for w in writers if _overlaps(a, w)), None)
            if clash is not None:
                problems.append(
                    f"{pf.where(s.line)}: stage {s.name} writes {o}, which stage {writers[clash].name} writes too"
                )
            writers[a] = s
    graph: dict[str, list[str]] = {}
    reads: dict[tuple[str, str], str] = {}
    for s in stages:
        graph[s.name] = []
        s.paths, s.sources = [], {}
        for label, path, kind in s.inputs:
            if not _is_path(path, kind, set(writers)):
                continue
            s.paths.append((label, path))
            for w, t in writers.items():
                if _overlaps(_abs(path), w):
                    s.sources[label] = t.name
                    if t.name not in graph[s.name]:
                        graph[s.name].append(t.name)
                        reads[(s.name, t.name)] = path
    problems += _order_problems(pf, stages, graph, reads)
    if problems:
        raise ConfigError(problems)
    for s in stages:
        s.deps = [t.name for t in stages if t.name in graph[s.name]]


def _order_problems(pf, stages: list[Stage], graph: dict[str, list[str]], reads) -> list[str]:
    index = {s.name: s.index for s in stages}
    cycle = find_cycle(graph, [s.name for s in stages])
    if cycle:
        first = stages[index[cycle[0]]]
        if len(cycle) == 2:
            return [
                f"{pf.where(first.line)}: stage {first.name} reads its own output {reads[(first.name, first.name)]}"
            ]
        steps = ", ".join(f"{a} reads {reads[(a, b)]} (line {stages[index[a]].line})" for a, b in zip(cycle, cycle[1:]))
        return [f"{pf.where(first.line)}: stages depend on each other in a cycle: {' -> '.join(cycle)}: {steps}"]
    return [
        f"{pf.where(s.line)}: stage {s.name} reads {reads[(s.name, t)]}, which stage {t} writes after it "
        f"(line {stages[index[t]].line}): stages run in the order of the file"
        for s in stages
        for t in graph[s.name]
        if index[t] > s.index
    ]


def resolve(
    pf: PipelineFile, overrides: dict[str, str], out: str | None = None, check: ArgvCheck | None = None
) -> Pipeline:
    """The runnable pipeline: ``overrides`` are ``--var``s, ``out`` the ``--out`` (the ``out`` variable)."""
    if "out" not in pf.vars:
        raise ConfigError(f"{pf.where()}: vars: 'out' is missing (where the stages write; --out sets it)")
    given = dict(overrides)
    if out is not None:
        given["out"] = out
    values = resolve_vars(pf, given)
    stages = resolve_stages(pf, values, check)
    out_dir = Path(os.path.normpath(values["out"]))
    link_stages(pf, stages, out_dir)
    fixed = builtins()

    def lookup(ref: str) -> str:
        if ref in values or ref in fixed:
            return values[ref] if ref in values else fixed[ref]
        raise ConfigError(f"{pf.where()}: env: unknown variable ${{{ref}}}.{did_you_mean(ref, values)}")

    env = {k: substitute(v, lookup) for k, v in pf.env.items()}
    return Pipeline(pf, values, out_dir, env, stages)
