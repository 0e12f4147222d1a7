"""The library's import graph, read from the source with ``ast`` (nothing is imported):

- every module under ``src/`` is run by a command: reached from an entry point through imports or
  lookups by name; benchmark and test harnesses live in ``scripts/bench/`` and ``tests/support/``;
- no import circle, counting the imports inside functions as well as those at module level;
- the layers point one way: the inference runner never reaches the planner, the library never
  reaches the CLI;
- an import inside a function (outside the CLI, whose command modules load on use) keeps something
  heavy off a light path: a package of ``HEAVY``, or a mixft module that imports one at module level,
  directly or through other modules; or it is an optional package (``OPTIONAL``) whose absence the
  function reports. Every other import stands at the top of its module.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from support.heavy import MODEL_STACK, ONLY_SOME

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "mixtral_ft"

# Modules nothing in src/ imports, because something outside it starts them by name. Each reason is
# checked by test_each_entry_point_is_started_the_way_its_reason_says.
ENTRY_POINTS = {
    "mixtral_ft.cli.entry": "the `mixft` executable: [project.scripts] in pyproject.toml",
    "mixtral_ft.cli.__main__": "`python -m mixtral_ft.cli`, the same command as `mixft`",
    "mixtral_ft.axolotl_cfg.keys": "`python -m mixtral_ft.axolotl_cfg.keys` rewrites the known-key snapshot",
    "mixtral_ft.train.probe": "Axolotl imports the --probe plugin by name (`plugins:` in the run's config)",
}

# Third-party packages the light commands (prepare, eval, report, config render, label, a warm plan,
# generate/judge --backend openai) must not pay for, or do not need: a function-level import of one of
# these, or of a mixft module that imports one at module level, keeps it off their path.
HEAVY = {*MODEL_STACK, *ONLY_SOME}

# Packages outside the base install, imported by the function that uses them so that it can say which
# extra to install (or do without): package -> (its distribution, why).
OPTIONAL = {
    "pynvml": (
        "nvidia-ml-py",
        "the train extra: plan/freemem.py reads free GPU memory through NVML where it is installed",
    ),
    "label_studio_sdk": ("label-studio-sdk", "the label extra: `mixft label export|import --url`"),
    "pydantic": ("pydantic", "comes with Axolotl (train extra): the error type of Axolotl's validate_config"),
}

# Modules whose function-level imports are not checked, with the reason.
LOCAL_IMPORTS_UNCHECKED: dict[str, str] = {}

# (importer prefix, imported prefix): imports that must not exist, with or without a function around them.
FORBIDDEN = [
    ("mixtral_ft.infer", "mixtral_ft.plan"),  # the command hands the runner its preflight (JobOptions.preflight)
]


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg`` for ``pkg/__init__.py``)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _module_of(name: str) -> str | None:
    """The package module ``name`` is, or is defined in (``a.b.func`` -> ``a.b``); None if outside it."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, tree: ast.AST) -> set[str]:
    """Package modules an ``import`` statement anywhere in ``tree`` names (in functions too)."""
    is_package = MODULES[module].name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_module_of(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..a import b
                anchor = here
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for a in node.names:  # `from pkg import submodule` names the submodule
                found.add(_module_of(f"{base}.{a.name}") if f"{base}.{a.name}" in MODULES else _module_of(base))
    found.discard(None)
    found.discard(module)
    return found  # type: ignore[return-value]


_NAME = re.compile(rf"^{PACKAGE}(\.\w+)+(:\w+)?$")


def _named(module: str, tree: ast.AST) -> set[str]:
    """Package modules a string constant names for a lookup by name: a registry entry
    (``"mixtral_ft.backends.hf:HFBackend"``), a lazy export, an Axolotl plugin path. Docstrings,
    which mention modules in prose, do not count."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = {
        _module_of(n.value.split(":")[0])
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings and _NAME.match(n.value)
    }
    found.discard(None)
    found.discard(module)
    return found  # type: ignore[return-value]


TREES = {m: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for m, p in MODULES.items()}
IMPORTS = {m: _imports(m, tree) for m, tree in TREES.items()}
NAMED = {m: _named(m, tree) for m, tree in TREES.items()}


def _parents(module: str) -> set[str]:
    """The packages Python imports before ``module``."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _reached_from(roots) -> set[str]:
    """The modules ``roots`` import, directly or not, or look up by name; with their packages."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += IMPORTS[module] | NAMED[module] | _parents(module)
    return seen


def test_every_module_is_run_by_a_command():
    """``src/`` holds only what ``mixft`` runs: every module is reached from an entry point. A module
    that only scripts or tests use (or that only such a module uses) is not."""
    unreached = sorted(set(MODULES) - _reached_from(ENTRY_POINTS))
    assert not unreached, (
        f"{', '.join(unreached)}: no command reaches it; a module that only scripts or tests use belongs in "
        "scripts/bench/ or tests/support/ (or add the command that starts it to ENTRY_POINTS, with its reason)"
    )


def test_each_entry_point_is_started_the_way_its_reason_says():
    assert set(ENTRY_POINTS) <= set(MODULES), sorted(set(ENTRY_POINTS) - set(MODULES))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts == {"mixft": "mixtral_ft.cli.entry:entrypoint"}
    assert MODULES["mixtral_ft.cli.__main__"].name == "__main__.py"
    assert 'if __name__ == "__main__":' in MODULES["mixtral_ft.axolotl_cfg.keys"].read_text(encoding="utf-8")
    from mixtral_ft.train.probe_report import PROBE_PLUGIN

    assert PROBE_PLUGIN.rpartition(".")[0] == "mixtral_ft.train.probe"


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles():
    """Module-level and function-level imports alike: an import moved into a function to dodge a
    circle at start-up is still a circle in the design."""
    circles = _circles(IMPORTS)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_circles_are_found():
    """The detector itself, on a made-up graph: a -> b -> c -> a is one circle, d alone is none."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("importer,imported", FORBIDDEN)
def test_layers_point_one_way(importer, imported):
    wrong = sorted(
        f"{m} -> {t}"
        for m in MODULES
        if m == importer or m.startswith(importer + ".")
        for t in IMPORTS[m] | NAMED[m]
        if t == imported or t.startswith(imported + ".")
    )
    assert not wrong, wrong


def test_only_the_cli_imports_the_cli():
    wrong = sorted(
        f"{m} -> {t}"
        for m in MODULES
        if not m.startswith("mixtral_ft.cli")
        for t in IMPORTS[m] | NAMED[m]
        if t.startswith("mixtral_ft.cli")
    )
    assert not wrong, wrong


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _split_imports(tree: ast.Module) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(imports that run when the module is imported, imports inside functions). A class body runs
    at import; an ``if TYPE_CHECKING:`` block never does."""
    top: list[ast.stmt] = []
    local: list[ast.stmt] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                (local if in_function else top).append(child)
            elif _is_type_checking(child) and not in_function:  # type: ignore[arg-type]
                for stmt in child.orelse:  # type: ignore[attr-defined]
                    walk(ast.Module(body=[stmt], type_ignores=[]), in_function)
                continue
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    walk(tree, False)
    return top, local


def _third_party(module: str, node: ast.stmt) -> set[str]:
    """Top-level names of the packages outside mixtral_ft that ``node`` imports."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        names = [] if node.level else [node.module or ""]  # type: ignore[attr-defined]
    return {n.split(".")[0] for n in names if n.split(".")[0] != PACKAGE}


def _package_modules(module: str, node: ast.stmt) -> set[str]:
    """The mixft modules running ``node`` imports: those it names, with their packages."""
    named = _imports(module, ast.Module(body=[node], type_ignores=[]))
    return named | {p for m in named for p in _parents(m)} - {module}


TOP_IMPORTS = {m: _split_imports(tree)[0] for m, tree in TREES.items()}


def _heavy_closure() -> dict[str, set[str]]:
    """Module -> the HEAVY packages importing it imports: at its module level, in its packages'
    ``__init__``, and the same for every mixft module these import (a fixed point over the graph)."""
    direct = {m: {p for n in nodes for p in _third_party(m, n)} & HEAVY for m, nodes in TOP_IMPORTS.items()}
    edges = {m: {d for n in nodes for d in _package_modules(m, n)} | _parents(m) for m, nodes in TOP_IMPORTS.items()}
    heavy = {m: set(h) for m, h in direct.items()}
    changed = True
    while changed:
        changed = False
        for m in heavy:
            grown = heavy[m].union(*(heavy[d] for d in edges[m] if d in heavy))
            if grown != heavy[m]:
                heavy[m], changed = grown, True
    return heavy


HEAVY_OF = _heavy_closure()


def _unguarded(module: str, tree: ast.Module) -> list[str]:
    """The function-level imports of ``module`` that keep nothing heavy off its path: they name no
    HEAVY package, no mixft module that imports one, no OPTIONAL package; or what they import the
    module already imports at module level."""
    found = []
    for node in _split_imports(tree)[1]:
        outside = _third_party(module, node)
        if outside & set(OPTIONAL):
            continue
        brings = (outside & HEAVY).union(*(HEAVY_OF.get(d, set()) for d in _package_modules(module, node)))
        if not brings - HEAVY_OF[module]:
            found.append(f"{MODULES[module].relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_imports_inside_functions_keep_something_heavy_off_a_light_path():
    """Outside the CLI an import stands at the top of its module unless it keeps a heavy package
    off a light path (directly, or through the mixft module it imports), or names an optional
    package. One moved into a function for any other reason hides the module's real dependencies
    (and, before the graph test above, its circles)."""
    found = [
        line
        for m, tree in TREES.items()
        if not m.startswith("mixtral_ft.cli") and m not in LOCAL_IMPORTS_UNCHECKED
        for line in _unguarded(m, tree)
    ]
    assert not found, "move to the top of the module (the import guards nothing heavy):\n" + "\n".join(found)


def test_the_local_import_check_catches_what_it_should():
    """The checker itself, on made-up function bodies inside real modules."""

    def check(module: str, body: str) -> list[str]:
        return [line.split(": ", 1)[1] for line in _unguarded(module, ast.parse(f"def f():\n    {body}\n"))]

    assert check("mixtral_ft.eval.stats", "import json") == ["import json"]
    assert check("mixtral_ft.eval.stats", "from mixtral_ft.util.hashing import sha256_file") != []
    assert check("mixtral_ft.eval.stats", "import torch") == []
    assert check("mixtral_ft.eval.stats", "from mixtral_ft.plan.sim import storage_keys") == []  # sim imports torch
    assert check("mixtral_ft.eval.stats", "import pynvml") == []
    assert check("mixtral_ft.plan.sim", "import torch.nn.functional as F") != []  # sim imports torch already
    assert HEAVY_OF["mixtral_ft.plan.sim"] == {"torch"} and HEAVY_OF["mixtral_ft.plan.measure"] == set()


def test_the_lists_of_exceptions_are_true():
    """Each OPTIONAL package is left out of the base install; each unchecked module exists."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    base = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps}
    assert not {dist for dist, _ in OPTIONAL.values()} & base
    assert not set(OPTIONAL) & HEAVY
    assert set(LOCAL_IMPORTS_UNCHECKED) <= set(MODULES), "remove the entry of a module that is gone"
