"""Every command in the code blocks of README.md and docs/**/*.md is checked against what is
installed: `mixft` commands parse against today's CLI (every option exists, required ones are
given), `hf` commands against the installed huggingface_hub CLI, `make` targets exist in the
Makefile, scripts exist and know the options given to them, `pip install` extras exist in
pyproject.toml, and any other tool is either in the environment or listed in EXTERNAL_TOOLS
with an install line that the docs really carry. The slow tier also runs `mixft train` commands
with --dry-run. All problems are reported at once, each as ``file:line: `command`: what``.

Which lines are commands: every line of a ```bash/```sh/```console block, and lines of an
unlabeled block whose first word is a known tool (other lines there are output or file trees).
In a transcript (a block where some lines start with ``$ ``) only those lines are commands.
A line with ``[...]``, ``...``, ``…``, ``A|B`` or ``<...>`` is a synopsis: only its ``--options`` are
checked. ``$VAR`` values parse as the placeholder ``VAR``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
SKIP_LANGS = {"json", "yaml", "yml", "python", "toml", "jsonl", "text", "diff"}
BUILTINS = {"export", "cd", "source", "mkdir", "cp", "mv", "ls", "cat", "echo", "tail", "head", "rm", "sleep", "wait"}
# Tools the pinned environment does not provide: the install line the docs must carry for each.
EXTERNAL_TOOLS = {
    "vllm": "pip install vllm",
    "curl": "apt-get install curl",
    "nvcc": "the CUDA toolkit torch was built with",
}
# Tools that no longer work in the pinned environment, and what replaces them.
DEPRECATED_TOOLS = {
    "huggingface-cli": 'hf (huggingface_hub 1.x: "`huggingface-cli` is deprecated and no longer works")'
}
VENV_BIN = REPO / ".venv" / "bin"


@dataclass
class DocCommand:
    where: str  # file:line
    text: str
    argv: list[str]  # after `$ ` and leading VAR=value assignments; $VARs become VAR
    synopsis: bool

    def fail(self, what: str) -> str:
        short = self.text if len(self.text) <= 110 else self.text[:107] + "..."
        return f"{self.where}: `{short}`: {what}"


def _blocks(path: Path):
    """(language, [(line number, text)]) for every fenced code block."""
    lang, lines, inside = None, [], False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^\s*```\s*([\w-]*)", line)
        if m:
            if inside:
                yield lang, lines
                inside = False
            else:
                inside, lang, lines = True, m.group(1).lower(), []
            continue
        if inside:
            lines.append((n, line))


def _logical_lines(lines):
    """Join backslash continuations; keep the first line's number."""
    buf, start = "", None
    for n, line in lines:
        if start is None:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield start, buf + line
        buf, start = "", None
    if buf:
        yield start, buf


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SYNOPSIS = re.compile(r"\[|\.\.\.|…|<[A-Za-z]|\S\|\S")


_EXECUTABLE_PATH = re.compile(r"^(\./|\.venv/bin/|\.ci/|scripts/)\S+$")


def _known_first_word(word: str) -> bool:
    return (
        word in KNOWN_TOOLS
        or word in EXTERNAL_TOOLS
        or word in BUILTINS
        or word in DEPRECATED_TOOLS
        or bool(_EXECUTABLE_PATH.match(word))
    )


def doc_commands() -> list[DocCommand]:
    out = []
    for path in DOCS:
        rel = path.relative_to(REPO)
        for lang, lines in _blocks(path):
            if lang in SKIP_LANGS:
                continue
            # A transcript (some lines start with `$ `): only those lines are commands, the rest is output.
            transcript = any(line.lstrip().startswith("$ ") for _, line in lines)
            for n, raw in _logical_lines(lines):
                text = raw.strip()
                if transcript and not text.startswith("$ "):
                    continue
                text = text.removeprefix("$ ")
                if not text or text.startswith("#"):
                    continue
                try:
                    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
                    lexer.whitespace_split = True
                    lexer.commenters = "#"
                    tokens = list(lexer)
                except ValueError:
                    if lang in SHELL_LANGS:
                        out.append(DocCommand(f"{rel}:{n}", text, ["<unparsable>"], False))
                    continue
                # One command per ;/&&/||/| segment.
                segment: list[str] = []
                for tok in [*tokens, ";"]:
                    if tok in {";", "&&", "||", "|", "&"}:
                        argv = segment
                        segment = []
                        while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
                            argv = argv[1:]
                        if not argv:
                            continue
                        if lang not in SHELL_LANGS and not _known_first_word(argv[0]):
                            continue  # output or a file tree in an unlabeled block
                        argv = [re.sub(r"\$\{?(\w+)\}?", r"\1", a) for a in argv]
                        synopsis = bool(_SYNOPSIS.search(_QUOTED.sub("", text)))
                        out.append(DocCommand(f"{rel}:{n}", text, argv, synopsis))
                    else:
                        segment.append(tok)
    return out


# ------------------------------------------------------------------ checkers


def _click_root(app):
    """A Typer app's click command; huggingface_hub >= 1.3x builds `hf` as a click group already."""
    import click
    import typer.main

    return app if isinstance(app, click.Command) else typer.main.get_command(app)


def _check_click(cmd: DocCommand, root, prog: str) -> str | None:
    """Resolve the subcommand path, then parse (or, for a synopsis, check the option names)."""
    import click

    node, path, args = root, [prog], list(cmd.argv[1:])
    root_opts = {o for p in root.params for o in (*p.opts, *p.secondary_opts)}
    while args and args[0] in root_opts and node is root:
        args.pop(0)
    while isinstance(node, click.Group):
        # Through click's API, not ``.commands``: huggingface_hub's `hf` loads its groups and commands lazily.
        ctx = click.Context(node, info_name=path[-1])
        names = ", ".join(sorted(node.list_commands(ctx)))
        if not args:
            return f"`{' '.join(path)}` needs a subcommand ({names})"
        name = args[0]
        if cmd.synopsis and "|" in name:
            name = name.split("|")[0]
        sub = node.get_command(ctx, name)
        if sub is None:
            return f"`{' '.join(path)}` has no subcommand '{name}' (has: {names})"
        sub = sub.materialize() if hasattr(sub, "materialize") else sub
        node, path, args = sub, [*path, name], args[1:]
    options = {o for p in node.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    if cmd.synopsis:
        unknown = []
        for a in args:
            for part in re.split(r"[\[\]|]", a):
                part = part.split("=")[0].rstrip(".")
                if part.startswith("--") and part not in options:
                    unknown.append(part)
        return f"`{' '.join(path)}` has no option(s) {', '.join(unknown)}" if unknown else None
    try:
        node.make_context(" ".join(path), args, resilient_parsing=False)
    except click.exceptions.Exit:
        return None
    except click.ClickException as e:
        return f"`{' '.join(path)}`: {e.format_message()}"
    return None


def _check_mixft(cmd: DocCommand) -> str | None:
    from mixtral_ft.cli.main import app

    return _check_click(cmd, _click_root(app), "mixft")


def _check_hf(cmd: DocCommand) -> str | None:
    try:
        from huggingface_hub.cli.hf import app
    except ImportError:
        return "the `hf` CLI (huggingface_hub >= 1.0) is not installed"
    return _check_click(cmd, _click_root(app), "hf")


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE)}


def _check_make(cmd: DocCommand) -> str | None:
    targets = [a for a in cmd.argv[1:] if not a.startswith("-") and "=" not in a]
    missing = [t for t in targets if t not in _make_targets()]
    return f"no Makefile target(s) {', '.join(missing)}" if missing else None


def _check_python(cmd: DocCommand) -> str | None:
    args = cmd.argv[1:]
    if args[:1] == ["-m"]:
        return None if len(args) > 1 else "python -m without a module"
    if not args or args[0] == "-c":
        return None
    script = REPO / args[0]
    if not script.exists():
        return f"{args[0]}: no such script"
    source = script.read_text(encoding="utf-8")
    unknown = [a.split("=")[0] for a in args[1:] if a.startswith("--") and f'"{a.split("=")[0]}"' not in source]
    return f"{args[0]} does not define {', '.join(unknown)}" if unknown else None


def _pyproject_extras() -> set[str]:
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return set(data["project"].get("optional-dependencies", {}))


def _check_pip(cmd: DocCommand) -> str | None:
    for a in cmd.argv[1:]:
        m = re.match(r"^(?:mixtral-ft|\.|-e\s*\.)\[([\w,-]+)\]$", a)
        if m:
            missing = set(m.group(1).split(",")) - _pyproject_extras()
            if missing:
                return f"pyproject.toml has no extra(s) {', '.join(sorted(missing))}"
        pin = re.match(r"^([A-Za-z0-9_.-]+)==([\w.+-]+)$", a)
        if pin:
            problem = _pin_problem(*pin.groups())
            if problem:
                return problem
    return None


def _pin_problem(name: str, version: str) -> str | None:
    """A pinned ``pip install NAME==VERSION`` must go with the pinned environment: inside Axolotl's own
    requirement on NAME (e.g. torch), and for flash-attn the version mixft's preflight tells users."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    if canonicalize_name(name) == "flash-attn":
        from mixtral_ft.train.preflight import FLASH_ATTN_INSTALL

        if f"flash-attn=={version} " not in FLASH_ATTN_INSTALL:
            return f"{name}=={version}, but mixft's preflight says: {FLASH_ATTN_INSTALL}"
    try:
        requires = importlib.metadata.requires("axolotl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for req in map(Requirement, requires):
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(req.name) == canonicalize_name(name) and not req.specifier.contains(version):
            return f"{name}=={version} is outside Axolotl's requirement {req}"
    return None


def _check_kernels(cmd: DocCommand) -> str | None:
    """The `kernels` CLI (an Axolotl dependency): its subcommand exists."""
    import importlib.util

    spec = importlib.util.find_spec("kernels.cli")
    if spec is None or spec.origin is None:
        return "the kernels package is not installed"
    commands = re.findall(r'add_parser\(\s*"([\w-]+)"', Path(spec.origin).read_text(encoding="utf-8"))
    sub = cmd.argv[1] if len(cmd.argv) > 1 else None
    return None if sub in commands else f"`kernels` has no subcommand {sub!r} (has: {', '.join(commands)})"


def _check_path_tool(cmd: DocCommand) -> str | None:
    tool = cmd.argv[0]
    if tool.startswith(".venv/bin/"):
        name = tool.removeprefix(".venv/bin/")
        if name.startswith("python"):
            return _check_python(DocCommand(cmd.where, cmd.text, ["python", *cmd.argv[1:]], cmd.synopsis))
        return None if (VENV_BIN / name).exists() else f"{tool}: not in the pinned environment"
    return None if (REPO / tool).exists() else f"{tool}: no such file in the repository"


KNOWN_TOOLS = {
    "mixft": _check_mixft,
    "hf": _check_hf,
    "make": _check_make,
    "python": _check_python,
    "python3": _check_python,
    "pip": _check_pip,
    "kernels": _check_kernels,
    "pytest": lambda cmd: None,
}


def check(cmd: DocCommand) -> str | None:
    tool = cmd.argv[0]
    if tool == "<unparsable>":
        return cmd.fail("not a valid shell line (unbalanced quotes?)")
    if tool in BUILTINS:
        return None
    if tool in DEPRECATED_TOOLS:
        return cmd.fail(f"`{tool}` is deprecated; use {DEPRECATED_TOOLS[tool]}")
    if tool in KNOWN_TOOLS:
        in_env = (VENV_BIN / tool).exists() or (Path(sys.executable).parent / tool).exists()  # the tests' own venv
        if tool not in ("make",) and tool != "mixft" and not in_env and not shutil.which(tool):
            return cmd.fail(f"`{tool}` is not in the pinned environment")
        problem = KNOWN_TOOLS[tool](cmd)
        return cmd.fail(problem) if problem else None
    if _EXECUTABLE_PATH.match(tool):
        problem = _check_path_tool(cmd)
        return cmd.fail(problem) if problem else None
    if tool in EXTERNAL_TOOLS:
        return None  # its install line is checked once, in test_external_tools_have_install_lines
    return cmd.fail(
        f"unknown tool '{tool}': install it in the environment, or add it to EXTERNAL_TOOLS in "
        f"{Path(__file__).name} with the install line the docs give for it"
    )


# ------------------------------------------------------------------ tests


def test_the_docs_have_commands_to_check():
    commands = doc_commands()
    tools = {c.argv[0] for c in commands}
    assert {"mixft", "hf", "make"} <= tools, tools
    assert sum(c.argv[0] == "mixft" and not c.synopsis for c in commands) >= 20


def test_every_documented_command_parses_against_the_installed_tools():
    problems = [p for p in (check(c) for c in doc_commands()) if p]
    assert not problems, "documented commands that would fail:\n" + "\n".join(problems)


def test_external_tools_have_install_lines():
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    used = {c.argv[0] for c in doc_commands()} & set(EXTERNAL_TOOLS)
    missing = [
        f"{tool}: the docs never say `{EXTERNAL_TOOLS[tool]}`"
        for tool in sorted(used)
        if EXTERNAL_TOOLS[tool] not in text
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "line,problem",
    [
        ("mixft generate --modle m --data d --out o", "No such option '--modle'. Did you mean '--model'?"),
        ("mixft generate --data d --out o", "Missing option '--model'"),
        ("mixft trian rg", "has no subcommand 'trian'"),
        ("mixft train rg --data DIR [--gpus N] [--nope X]", "has no option(s) --nope"),
        ("make no-such-target", "no Makefile target(s) no-such-target"),
        ("hf download repo --local-dir d --exclude a b", None),
        ("hf dowload repo", "has no subcommand 'dowload'"),
        ("frobnicate --now", "unknown tool 'frobnicate'"),
        ("huggingface-cli login", "`huggingface-cli` is deprecated; use hf"),
        ("OPENAI_API_KEY=x mixft generate --backend openai -m m --data d --out o ; make test", None),
        ("pip install 'mixtral-ft[nosuchextra]'", "pyproject.toml has no extra(s) nosuchextra"),
        ("pip install torch==2.12.0", "torch==2.12.0 is outside Axolotl's requirement torch<2.15.0,>=2.13.0"),
        ("pip install flash-attn==2.7.4 --no-build-isolation", "flash-attn==2.7.4, but mixft's preflight says"),
        ("kernels versions kernels-community/flash-attn2", None),
        ("kernels fetch x", "`kernels` has no subcommand 'fetch'"),
    ],
)
def test_the_checker_catches_what_it_should(tmp_path, monkeypatch, line, problem):
    doc = tmp_path / "README.md"
    doc.write_text(f"```bash\n{line}\n```\n")
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "DOCS", [doc])
    monkeypatch.setattr(module, "REPO", tmp_path)
    got = [p for p in map(check, doc_commands()) if p]
    if problem is None:
        assert got == []
    else:
        assert len(got) == 1 and problem in got[0], got


@pytest.mark.slow
def test_documented_train_commands_dry_run(tiny_mixtral_dir, rg_data_dir, tc_data_dir, tmp_path, monkeypatch, capsys):
    """`mixft train` commands of the README, with --dry-run, as a new user would run them: the
    config renders and passes Axolotl's validation; only $MODEL is swapped for the tiny Mixtral."""
    from mixtral_ft.cli.main import main

    monkeypatch.chdir(tmp_path)
    ran = []
    for cmd in doc_commands():
        if cmd.argv[:2] != ["mixft", "train"] or cmd.synopsis or not cmd.where.startswith("README.md"):
            continue
        argv = [str(tiny_mixtral_dir) if a == "MODEL" else a for a in cmd.argv[1:]]
        data = Path(argv[argv.index("--data") + 1])
        if not data.exists():
            shutil.copytree(rg_data_dir if argv[1] == "rg" else tc_data_dir, data)
        rc = main([*argv, "--dry-run"])
        out = capsys.readouterr()
        assert rc == 0, cmd.fail(out.err.strip().splitlines()[-1] if out.err.strip() else f"exit {rc}")
        assert "axolotl.cli.train" in out.out
        ran.append(cmd.where)
    assert len(ran) >= 2, ran


def test_the_readme_gpu_install_is_one_block_in_install_order():
    """The GPU install is one fenced block (checked against the tools above like every command), in
    the order that works: CUDA torch before Axolotl, flash-attn's build tools and nvcc before flash-attn;
    and the README points to the way without flash-attn."""
    readme = REPO / "README.md"
    blocks = [lines for lang, lines in _blocks(readme) if any("flash-attn" in text for _, text in lines)]
    assert len(blocks) == 1, "the README's flash-attn install belongs in one block"
    commands = [text.split("#")[0].strip() for _, text in _logical_lines(blocks[0]) if text.split("#")[0].strip()]
    first = {
        key: next(i for i, c in enumerate(commands) if c.startswith(key))
        for key in ("pip install torch==", "pip install -e '.[train]'", "pip install ninja packaging wheel", "nvcc")
    }
    flash = next(i for i, c in enumerate(commands) if c.startswith("pip install flash-attn=="))
    assert first["pip install torch=="] < first["pip install -e '.[train]'"] < flash
    assert first["pip install ninja packaging wheel"] < flash and first["nvcc"] < flash
    assert commands[flash].endswith("--no-build-isolation")  # its setup.py imports the installed torch
    inside = {n for n, _ in blocks[0]}
    text = readme.read_text(encoding="utf-8").splitlines()
    outside = [line for n, line in enumerate(text, 1) if n not in inside]
    assert not any("pip install flash-attn" in line for line in outside)  # one place says how
    assert 'docs/training.md, "Flash attention without flash-attn"' in "\n".join(outside)
    docs = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    assert "\n### Flash attention without flash-attn\n" in docs
