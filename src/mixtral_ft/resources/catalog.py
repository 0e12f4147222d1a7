"""A configs folder as a catalog: what ``mixft config list`` shows and ``mixft config copy`` copies.

An entry's name is its path inside the folder without the extension (``rg``, ``profiles/cpu``,
``deepspeed/zero2``, ``prompts/tc_v1``); ``copy`` also takes the file name, or the bare stem when
only one entry has it (``cpu``). ``all`` names the whole folder: copy it, edit it, and point
``MIXFT_CONFIGS_DIR`` at the copy so that ``config`` and ``train`` use it. The shipped ``mixft
run`` pipelines are listed and copied beside them (``pipelines/report``, or ``report``); they are
not part of a configs folder (``all``): a copy runs as ``mixft run FILE``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mixtral_ft.errors import UsageError, suggest
from mixtral_ft.resources import configs_dir, pipelines_dir
from mixtral_ft.util.atomic import atomic_write_bytes, staged_dir

ALL = "all"
_KINDS = {
    "": "base config",
    "profiles": "hardware profile",
    "deepspeed": "DeepSpeed config",
    "prompts": "prompt template",
    "pipelines": "pipeline (mixft run)",
}
_SUFFIXES = (".yml", ".yaml", ".json", ".txt")


@dataclass(frozen=True)
class ConfigEntry:
    name: str  # path inside the folder, no extension
    path: Path
    kind: str
    description: str


def _description(path: Path) -> str:
    """The first comment line that is not the command line (``# mixft ...``), if any."""
    if path.suffix not in (".yml", ".yaml"):
        return ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("mixft "):
            return text
    return ""


def list_configs(folder: Path | None = None) -> list[ConfigEntry]:
    """Every file of the configs folder (default: the active one), base configs first."""
    folder = folder or configs_dir()
    entries = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in _SUFFIXES or path.name.startswith("."):
            continue
        rel = path.relative_to(folder)
        group = rel.parent.as_posix() if rel.parent != Path(".") else ""
        entries.append(ConfigEntry(rel.with_suffix("").as_posix(), path, _KINDS.get(group, group), _description(path)))
    order = list(_KINDS)
    return sorted(
        entries,
        key=lambda e: (
            order.index(e.name.rpartition("/")[0]) if e.name.rpartition("/")[0] in order else len(order),
            e.name,
        ),
    )


def list_pipelines() -> list[ConfigEntry]:
    """The shipped ``mixft run`` pipelines, as ``pipelines/NAME`` entries."""

    return [
        ConfigEntry(f"pipelines/{path.stem}", path, _KINDS["pipelines"], _description(path))
        for path in sorted(pipelines_dir().glob("*.yml"))
    ]


def catalog(folder: Path | None = None) -> list[ConfigEntry]:
    """What ``mixft config list`` shows: the configs folder, then the shipped pipelines."""
    return list_configs(folder) + list_pipelines()


def find_config(name: str, folder: Path | None = None) -> ConfigEntry:
    """The entry called ``name`` (see the module docstring); a "Did you mean" error otherwise."""
    entries = catalog(folder)
    clean = name.strip().strip("/")
    for e in entries:
        if clean in (e.name, e.name + e.path.suffix):
            return e
    stem = Path(clean).with_suffix("").name if Path(clean).suffix in _SUFFIXES else clean
    matches = [e for e in entries if Path(e.name).name == stem]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(
            f"'{name}' names {len(matches)} configs: {', '.join(e.name for e in matches)}; give the folder too"
        )
    raise UsageError(suggest(name, [e.name for e in entries] + [ALL], "config"))


def copy_config(name: str, dest: Path, force: bool = False, folder: Path | None = None) -> Path:
    """Copy entry ``name`` (or ``all``, the whole folder) to ``dest``; return what was written.

    ``dest`` may be an existing folder (the file keeps its name there) or a file path; an
    existing file or, for ``all``, an existing folder is replaced only with ``force``.
    """
    folder = folder or configs_dir()
    dest = Path(dest)
    if name == ALL:
        with staged_dir(dest, force=force) as stage:
            for e in list_configs(folder):
                target = stage / e.path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(e.path, target)
        return dest
    entry = find_config(name, folder)
    target = dest / entry.path.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise UsageError(f"{target}: already exists; use --force to replace it")
    atomic_write_bytes(target, entry.path.read_bytes())
    return target
