"""YAML loading that remembers where every key and value came from, so errors can say FILE:LINE:COL.

PyYAML follows YAML 1.1, which reads ``14:00`` as the integer 840 (base 60) and ``on``/``no`` as booleans:
both bite people writing shift calendars and tag maps.  The loader here resolves plain scalars the YAML 1.2
way instead (only ``true``/``false`` are booleans; no base-60 numbers).  Duplicate keys, which PyYAML would
silently let the last one win, are reported as errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema resolution of plain scalars."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 0) if text.startswith("0x") else int(text)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    column: int


@dataclass
class Document:
    """A parsed YAML document: plain Python data plus the position of every key and value in it."""

    path: str
    data: Any
    key_marks: dict[Path_, Mark] = field(default_factory=dict)
    value_marks: dict[Path_, Mark] = field(default_factory=dict)
    duplicate_keys: list[tuple[Path_, Mark]] = field(default_factory=list)

    def mark_for(self, path: Path_, *, at_key: bool = False) -> Mark:
        """Where ``path`` is written: its value (or its key), else the nearest enclosing thing that exists."""
        probe = path
        while probe:
            marks = (self.key_marks, self.value_marks) if at_key else (self.value_marks, self.key_marks)
            for table in marks:
                if probe in table:
                    return table[probe]
            probe = probe[:-1]
        return self.value_marks.get((), Mark(1, 1))


class YamlError(Exception):
    """The file cannot be read or is not well-formed YAML."""

    def __init__(self, path: str, mark: Mark | None, message: str) -> None:
        self.path, self.mark, self.message = path, mark, message
        where = f"{path}:{mark.line}:{mark.column}" if mark else path
        super().__init__(f"{where}: {message}")


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def load_yaml(path: str | Path) -> Document:
    """Parse one YAML file into a :class:`Document`; raises :class:`YamlError` with a position."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError(name, None, f"cannot read the file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise YamlError(name, None, f"the file is not UTF-8 text: {exc}") from exc
    return parse_yaml(text, name)


MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences a configuration may have (a real one needs fewer than ten)."""
MAX_ALIAS_EXPANSION = 500_000
"""Most values that aliases (``*anchor``, ``<<: *defaults``) may repeat in all.  Using an anchor for shared
defaults costs a few values per use; an alias bomb (anchors nesting anchors, nine of nine of nine …) expands
exponentially and is refused after this many, in about a second, instead of eating memory for ever."""


class _Budget:
    __slots__ = ("repeated", "seen")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.repeated = 0


def parse_yaml(text: str, name: str = "<string>") -> Document:
    """Parse YAML text into a :class:`Document`; raises :class:`YamlError` with a position."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(name, text, exc) from None
    try:
        root = loader.get_single_node()
        doc = Document(name, None)
        if root is None:
            doc.data = {}
            return doc
        doc.value_marks[()] = _mark(root)
        doc.data = _build(loader, root, (), doc, _Budget())
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else None
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise YamlError(name, where, f"invalid YAML: {problem}") from exc
    except yaml.reader.ReaderError as exc:
        raise _reader_error(name, text, exc) from None
    except RecursionError:
        raise YamlError(name, None, f"invalid YAML: nested deeper than the parser can follow "
                                    f"(a configuration nests at most {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def _reader_error(name: str, text: str, exc: yaml.reader.ReaderError) -> YamlError:
    """A NUL byte or a control character: PyYAML gives only an offset, we give the line and column."""
    where = Mark(text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position))
    character = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return YamlError(name, where, f"invalid YAML: the character U+{ord(character):04X} is not allowed in a "
                                  "configuration (a control character or NUL byte)")


def _build(loader: _Loader, node: yaml.Node, path: Path_, doc: Document, budget: _Budget) -> Any:
    if id(node) in budget.seen:
        budget.repeated += 1
        if budget.repeated > MAX_ALIAS_EXPANSION:
            raise yaml.constructor.ConstructorError(
                None, None, f"aliases repeat more than {MAX_ALIAS_EXPANSION:,} values (anchors nesting other "
                            "anchors?); refusing the document", node.start_mark)
    else:
        budget.seen.add(id(node))
    if len(path) > MAX_DEPTH:
        raise yaml.constructor.ConstructorError(
            None, None, f"nested deeper than {MAX_DEPTH} levels", node.start_mark)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a name or a number", key_node.start_mark)
            child: Path_ = (*path, key)
            if key in result:
                doc.duplicate_keys.append((child, _mark(key_node)))
            doc.key_marks[child] = _mark(key_node)
            doc.value_marks[child] = _mark(value_node)
            result[key] = _build(loader, value_node, child, doc, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            child = (*path, index)
            doc.value_marks[child] = _mark(item_node)
            items.append(_build(loader, item_node, child, doc, budget))
        return items
    return loader.construct_object(node, deep=True)
