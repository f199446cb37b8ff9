"""YAML loading that remembers where every key and value came from, so errors can say FILE:LINE:COL.

PyYAML follows YAML 1.1, which reads ``14:00`` as the integer 840 (base 60) and ``on``/``no`` as booleans:
both bite people writing shift calendars and tag maps.  The loader here resolves plain scalars the YAML 1.2
way instead (only ``true``/``false`` are booleans; no base-60 numbers).  Duplicate keys, which PyYAML would
silently let the last one win, are reported as errors.
"""

from __future__ import annotations

import gc
import re
from array import array
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


class _FastLoader(yaml.CSafeLoader):
    """libyaml's parser (C) with the resolution and constructors of :class:`_Loader`: the same data, about ten
    times faster.  Only used on files it accepts; see :func:`parse_yaml`.

    The parser asks Python for the tag of every scalar; a tag map says ``unit: degC`` fifty thousand times, so
    the answer for a plain scalar is remembered per document (it depends on the text alone: no path resolvers
    are registered, which is also why descending and ascending the resolver's path can be skipped)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            tag = self._plain_tags.get(value)
            if tag is None:
                tag = self._plain_tags[value] = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


_FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
_FastLoader.yaml_constructors = _Loader.yaml_constructors
_FAST = bool(getattr(yaml, "__with_libyaml__", False)) and not _Loader.yaml_path_resolvers

_SCALAR_TAGS = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")
_STR_TAG = "tag:yaml.org,2002:str"
_SCALAR_NODE = yaml.ScalarNode


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a file."""

    line: int
    column: int


def _pack(node: yaml.Node) -> int:
    mark = node.start_mark
    return (mark.line + 1) << 32 | (mark.column + 1)


def _unpack(packed: int) -> Mark:
    return Mark(packed >> 32, packed & 0xFFFF_FFFF)


class _Marks(Mapping[Path_, Mark]):
    """``doc.key_marks[path]`` / ``doc.value_marks[path]``: positions looked up when asked for."""

    def __init__(self, doc: Document, at_key: bool) -> None:
        self._doc, self._at_key = doc, at_key

    def __getitem__(self, path: Path_) -> Mark:
        mark = self._doc._find(path, self._at_key)
        if mark is None:
            raise KeyError(path)
        return mark

    def __iter__(self) -> Iterator[Path_]:
        return (path for path, at_key in self._doc._paths() if at_key == self._at_key)

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class Document:
    """A parsed YAML document: plain Python data plus the position of every key and value in it.

    Positions are kept compactly, one array of packed line/column numbers per mapping or sequence (keyed by the
    container's ``id``), and turned into a :class:`Mark` only when an error is reported: a path of tuples and
    two ``Mark`` objects per value cost more memory and time than the data itself on a 50,000-tag map.  This is
    why ``data`` must not be modified.
    """

    path: str
    data: Any
    duplicate_keys: list[tuple[Path_, Mark]] = field(default_factory=list)
    root_mark: Mark | None = None
    # id(mapping) → key, value, key, value … in the mapping's order; id(sequence) → one per item
    _marks: dict[int, array[int]] = field(default_factory=dict, repr=False)

    @property
    def key_marks(self) -> Mapping[Path_, Mark]:
        """Where the key that ends each path is written."""
        return _Marks(self, True)

    @property
    def value_marks(self) -> Mapping[Path_, Mark]:
        """Where the value each path names starts (``()``: the document)."""
        return _Marks(self, False)

    def mark_for(self, path: Path_, *, at_key: bool = False) -> Mark:
        """Where ``path`` is written: its value (or its key), else the nearest enclosing thing that exists."""
        probe = path
        while probe:
            for key in ((True, False) if at_key else (False, True)):
                mark = self._find(probe, key)
                if mark is not None:
                    return mark
            probe = probe[:-1]
        return self.root_mark or Mark(1, 1)

    def _find(self, path: Path_, at_key: bool) -> Mark | None:
        if not path:
            return None if at_key else self.root_mark
        parent = self.data
        for part in path[:-1]:
            parent = _child(parent, part)
            if parent is _ABSENT:
                return None
        marks = self._marks.get(id(parent))
        last = path[-1]
        if marks is None:
            return None
        if isinstance(parent, dict):
            if last not in parent:
                return None
            index = next(i for i, key in enumerate(parent) if key == last)
            return _unpack(marks[2 * index + (0 if at_key else 1)])
        if at_key or not isinstance(last, int) or not 0 <= last < len(parent):
            return None
        return _unpack(marks[last])

    def _paths(self) -> Iterator[tuple[Path_, bool]]:
        """Every path with a position: (path, True) for keys and (path, False) for values."""
        if self.root_mark is not None:
            yield (), False
        stack: list[tuple[Path_, Any]] = [((), self.data)]
        while stack:
            path, node = stack.pop()
            if isinstance(node, dict):
                for key, value in node.items():
                    yield (*path, key), True
                    yield (*path, key), False
                    stack.append(((*path, key), value))
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    yield (*path, index), False
                    stack.append(((*path, index), value))


_ABSENT = object()


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part, _ABSENT)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


class YamlError(Exception):
    """The file cannot be read or is not well-formed YAML."""

    def __init__(self, path: str, mark: Mark | None, message: str) -> None:
        self.path, self.mark, self.message = path, mark, message
        where = f"{path}:{mark.line}:{mark.column}" if mark else path
        super().__init__(f"{where}: {message}")


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


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector off while a configuration is read and validated: that creates a million objects and
    no garbage cycles, and the collector's passes over the growing heap cost more than the work (on 50,000
    tags: 4 s of 19 s of parsing, 1 s of 1.5 s of validation)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _c_parser_reads_as_python(text: str) -> bool:
    """Whether libyaml may read this text: it is installed, and the text has none of what the two parsers
    disagree on.  A tab is whitespace to libyaml after ``key:`` where PyYAML refuses it, and PyYAML's reader
    refuses characters (control characters, NUL) with an offset :func:`_reader_error` turns into a position."""
    return _FAST and "\t" not in text and not _Loader.NON_PRINTABLE.search(text)


def parse_yaml(text: str, name: str = "<string>") -> Document:
    """Parse YAML text into a :class:`Document`; raises :class:`YamlError` with a position.

    libyaml (PyYAML's C parser) reads the file when PyYAML has it; whenever it refuses a document, or the
    document breaks a limit, the document is read again by PyYAML's Python parser, which says what is wrong in
    the words and positions the messages have always had.  Both build the same data and the same positions
    (``tests/test_config.py`` compares them on every example, golden case and a list of odd documents).
    """
    with collector_paused():
        if _c_parser_reads_as_python(text):
            try:
                return _parse(_FastLoader(text), name)
            except Exception:
                pass  # the Python parser below reads it again and says what is wrong
        try:
            loader = _Loader(text)
        except yaml.reader.ReaderError as exc:
            raise _reader_error(name, text, exc) from None
        try:
            return _parse(loader, name)
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


def _parse(loader: _Loader | _FastLoader, name: str) -> Document:
    try:
        root = loader.get_single_node()
        doc = Document(name, None)
        if root is None:
            doc.data = {}
            return doc
        doc.root_mark = _unpack(_pack(root))
        doc.data = _build(loader, root, 0, None, doc, _Budget())
        return doc
    finally:
        loader.dispose()


def _reader_error(name: str, text: str, exc: yaml.reader.ReaderError) -> YamlError:
    """A NUL byte or a control character: PyYAML gives only an offset, we give the line and column."""
    where = Mark(text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position))
    character = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return YamlError(name, where, f"invalid YAML: the character U+{ord(character):04X} is not allowed in a "
                                  "configuration (a control character or NUL byte)")


def _scalar(loader: _Loader | _FastLoader, node: yaml.Node) -> Any:
    """A plain value without the constructor's bookkeeping (its cache of every node it built, kept until the
    loader goes away); anything else goes through the constructor."""
    if type(node) is yaml.ScalarNode:
        if node.tag == _STR_TAG:
            return node.value
        if node.tag in _SCALAR_TAGS:
            return loader.yaml_constructors[node.tag](loader, node)
    return loader.construct_object(node, deep=True)


_Link = tuple[Any, str | int] | None
"""Where a node is, as (parent's link, key): cheaper to extend than a path, which only a duplicate key needs."""


def _path_of(link: _Link) -> Path_:
    parts: list[str | int] = []
    while link is not None:
        link, part = link
        parts.append(part)
    return tuple(reversed(parts))


def _build(loader: _Loader | _FastLoader, node: yaml.Node, depth: int, link: _Link, doc: Document,
           budget: _Budget) -> Any:
    """The data of a node, with its positions written into ``doc``.

    A plain text value met for the first time is taken in line rather than by a call of its own: it is most
    of the nodes of a tag map, and this loop is most of the loading time that remains once libyaml parses."""
    seen = budget.seen
    if id(node) in seen:
        budget.repeated += 1
        if budget.repeated > MAX_ALIAS_EXPANSION:
            raise yaml.constructor.ConstructorError(
                None, None, f"aliases repeat more than {MAX_ALIAS_EXPANSION:,} values (anchors nesting other "
                            "anchors?); refusing the document", node.start_mark)
    else:
        seen.add(id(node))
    if depth > MAX_DEPTH:
        raise yaml.constructor.ConstructorError(
            None, None, f"nested deeper than {MAX_DEPTH} levels", node.start_mark)
    inline = depth < MAX_DEPTH  # a child one level down is still within the limit
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        result: dict[Any, Any] = {}
        marks = array("q")
        for key_node, value_node in node.value:
            if type(key_node) is _SCALAR_NODE and key_node.tag == _STR_TAG:
                key = key_node.value
            else:
                key = _scalar(loader, key_node)
                if not isinstance(key, str | int):
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a name or a number", key_node.start_mark)
            key_mark, value_mark = key_node.start_mark, value_node.start_mark
            key_at = (key_mark.line + 1) << 32 | (key_mark.column + 1)
            value_at = (value_mark.line + 1) << 32 | (value_mark.column + 1)
            if key in result:
                doc.duplicate_keys.append(((*_path_of(link), key), _unpack(key_at)))
                index = 2 * next(i for i, seen_key in enumerate(result) if seen_key == key)
                marks[index], marks[index + 1] = key_at, value_at
            else:
                marks.append(key_at)
                marks.append(value_at)
            if inline and type(value_node) is _SCALAR_NODE and id(value_node) not in seen:
                seen.add(id(value_node))
                result[key] = value_node.value if value_node.tag == _STR_TAG else _scalar(loader, value_node)
            else:
                result[key] = _build(loader, value_node, depth + 1, (link, key), doc, budget)
        if marks:
            doc._marks[id(result)] = marks
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        marks = array("q")
        for index, item_node in enumerate(node.value):
            item_mark = item_node.start_mark
            marks.append((item_mark.line + 1) << 32 | (item_mark.column + 1))
            if inline and type(item_node) is _SCALAR_NODE and id(item_node) not in seen:
                seen.add(id(item_node))
                items.append(item_node.value if item_node.tag == _STR_TAG else _scalar(loader, item_node))
            else:
                items.append(_build(loader, item_node, depth + 1, (link, index), doc, budget))
        if marks:
            doc._marks[id(items)] = marks
        return items
    return _scalar(loader, node)
