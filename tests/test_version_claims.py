"""What the library says about upstream code is about the versions it runs with: a statement
"Axolotl X.Y.Z" in src/ names the release the `train` extra pins, and "transformers / PEFT /
bitsandbytes / torch X.Y.Z" the release installed with it. A statement left from an earlier release
(its behaviour read in a source that is no longer installed) fails here. Module docstrings cite no
upstream file and line: that material lives in docs/design/."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mixtral_ft"
STATEMENT = re.compile(r"\b(Axolotl|axolotl|transformers|peft|PEFT|bitsandbytes|torch) v?(\d+\.\d+(?:\.\d+)?)\b")


def _axolotl_pin() -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    (pin,) = [d for d in extras["train"] if d.startswith("axolotl==")]
    return pin.removeprefix("axolotl==")


def _statements() -> list[tuple[str, str, str]]:
    """(where, package, version) for every version statement in the library's source."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name, version in STATEMENT.findall(line):
                found.append((f"{path.relative_to(REPO)}:{number}", name.lower(), version))
    return found


def test_axolotl_statements_name_the_pinned_release():
    pin = _axolotl_pin()
    wrong = [f"{where}: Axolotl {v}" for where, name, v in _statements() if name == "axolotl" and not pin.startswith(v)]
    assert not wrong, f"the train extra pins Axolotl {pin}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", ["transformers", "peft", "bitsandbytes", "torch"])
def test_library_statements_name_the_installed_release(package):
    try:
        installed = metadata.version(package)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed (a light install)")
    wrong = [
        f"{where}: {package} {v}" for where, name, v in _statements() if name == package and not installed.startswith(v)
    ]
    assert not wrong, f"{package} {installed} is installed:\n" + "\n".join(wrong)


def test_the_statements_are_found():
    """The pattern itself: the pinned release is named in the lengths report and the install hint."""
    from mixtral_ft.axolotl_cfg.validate import INSTALL_HINT
    from mixtral_ft.data.lengths import AXOLOTL

    pin = _axolotl_pin()
    assert AXOLOTL == f"Axolotl {pin}" and f"Axolotl {pin}" in INSTALL_HINT
    assert STATEMENT.findall("as Axolotl 0.19.0 builds it, transformers 5.16.1 and PEFT 0.20") == [
        ("Axolotl", "0.19.0"),
        ("transformers", "5.16.1"),
        ("PEFT", "0.20"),
    ]
    assert any(where.startswith("src/mixtral_ft/data/lengths.py") for where, _, _ in _statements())


UPSTREAM_LINE = re.compile(r"\.(?:py|cpp|js)`{0,2}\s*:\s*\d+|~\d{2,}")


def test_module_docstrings_cite_no_upstream_lines():
    """A module's docstring says what the module is for; the essays that rest on upstream code, with
    its file and line, live in docs/design/ (the module links the page)."""
    import ast

    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        wrong += [f"{path.relative_to(REPO)}: {m}" for m in UPSTREAM_LINE.findall(doc)]
    assert not wrong, "move these citations to docs/design/:\n" + "\n".join(wrong)
    assert UPSTREAM_LINE.findall("(``loaders/model.py:962-972``, ``peft/utils/other.py`` ~198-202)") == [
        ".py:962",
        "~198",
    ]
