"""The one YAML loader of mixft: configs, profiles, ``--set`` values, run directories' configs and
pipeline files all go through :func:`safe_load` (or :func:`load_document` when line numbers are
needed).

PyYAML's ``safe_load`` builds no Python objects from tags, but it still accepts two kinds of
hostile input:

- **Alias expansion** ("billion laughs"): ``a: &a [x, x, x]``, ``b: &b [*a, *a, *a]``, ... is a
  few hundred bytes that becomes millions of values once anything walks or writes it out
  (``config render`` wrote a 9.4 MB file from a 300-byte ``--set`` value; a few more levels
  exhaust memory). The loader counts the nodes the document has *after* expanding every alias
  (memoized, so counting costs no more than the text) and refuses more than :data:`MAX_NODES`;
  a recursive alias (``&a [*a]``) is refused too.
- **Depth**: thousands of nested ``[[[...]]]`` overflow Python's recursion in the composer.
  More than :data:`MAX_DEPTH` levels is refused before that happens.

Tags other than YAML's standard ones for plain data (string, integer, float, boolean, null,
timestamp, list, mapping, and the merge key ``<<``) are refused as well: ``!!python/object``,
``!!binary``, ``!!set``, ``!custom``. A refusal is :class:`UnsafeYamlError`: one line naming the
source and line, exit status 2, raised before the caller writes anything. Syntax errors stay
``yaml.YAMLError``, which callers already turn into their own one-line messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from mixtral_ft.errors import MixftError

MAX_NODES = 10_000  # values after alias expansion; a full Axolotl config has a few hundred
MAX_DEPTH = 64  # nesting levels; real configs and pipelines have fewer than 10
_STANDARD = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(
    _STANDARD + name for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map", "merge")
)


class UnsafeYamlError(MixftError):
    """YAML refused before it is used: too many values once aliases are expanded, too deep, or a
    non-standard tag. One line; exit status 2."""

    exit_code = 2


def _where(source: str, mark: Any, one_line: bool = False) -> str:
    return f"{source}:{mark.line + 1}" if mark is not None and not one_line else source


class _CheckedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses nesting past ``MAX_DEPTH`` while composing (the composer recurses)."""

    def __init__(self, stream: str, source: str):
        super().__init__(stream)
        self.source = source
        self.one_line = "\n" not in stream.rstrip("\n")  # a --set value: no line number to give
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise UnsafeYamlError(
                    f"{_where(self.source, mark, self.one_line)}: YAML refused: nested more than {MAX_DEPTH} levels deep"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_tags_and_size(root: yaml.Node, source: str, one_line: bool) -> None:
    """Refuse non-standard tags, recursive aliases, and more than ``MAX_NODES`` expanded nodes."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise UnsafeYamlError(
                f"{_where(source, node.start_mark, one_line)}: YAML refused: an alias refers to itself"
            )
        if node.tag not in ALLOWED_TAGS:
            raise UnsafeYamlError(
                f"{_where(source, node.start_mark, one_line)}: YAML refused: tag {node.tag.replace(_STANDARD, '!!')} is not "
                "allowed (only strings, numbers, booleans, null, dates, lists and mappings)"
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise UnsafeYamlError(
                f"{_where(source, node.start_mark, one_line)}: YAML refused: more than {MAX_NODES:,} values once its "
                "aliases are expanded (a YAML 'billion laughs'?)"
            )
        return total

    size(root)


@dataclass
class Document:
    """A checked YAML document: its node tree (for line numbers) and the plain Python value."""

    source: str
    node: yaml.Node | None
    value: Any
    loader: _CheckedLoader

    def value_of(self, node: yaml.Node) -> Any:
        """The Python value of one node of this document."""
        return self.loader.construct_object(node, deep=True)


def load_document(text: str, source: str = "<yaml>") -> Document:
    """Compose, check (see the module docstring) and construct ``text``; raises ``UnsafeYamlError``
    for hostile input and ``yaml.YAMLError`` for a syntax error."""
    loader = _CheckedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(source, None, None, loader)
        _check_tags_and_size(node, source, loader.one_line)
        value = loader.construct_document(node)
    finally:
        loader.dispose()
    return Document(source, node, value, loader)


def safe_load(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load`` with the checks of this module; ``source`` names the text in messages."""
    return load_document(text, source).value
