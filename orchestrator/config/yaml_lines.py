"""YAML with line numbers: a manifest's text -> plain data, and the line of every key and entry.

The data is built from libyaml's parser events here rather than by ``yaml.safe_load``, so that
we keep a map from document paths (``("items", 3, "duration")``) to line numbers, and so that
duplicate keys, which YAML resolves silently, become problems. It is built as the events stream
by, not from a composed node tree of the whole document (which is ten times the size of the
data). A value that cannot be read (a date like 2024-13-45, an unsupported tag) is reported and
left out, so that it does not cascade into further problems; aliases that would expand a small
file enormously ("billion laughs") stop the reading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import yaml

from orchestrator.config.problems import ProblemSink
from orchestrator.validators import DocPath, got

#: libyaml's composer when PyYAML was built with it (the wheels are): the same nodes and line
#: marks as the pure-Python one, several times faster on a manifest of thousands of items.
_COMPOSER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
# Aliases can make a small file expand exponentially ("billion laughs"): a document may expand
# to this many values more than it has characters (every value written out takes at least one
# character, so only aliases can exceed the budget, however many items are inline).
_MAX_VALUES: Final = 100_000
#: A value that could not be read; already reported, so it is left out instead of cascading
#: (and what :func:`parse` returns for a document that could not be read at all).
UNREADABLE: Final = object()

_Report = Callable[[DocPath, str, int | None], None]


class _TooLarge(Exception):
    pass


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Builder:
    """Plain data from a composed node tree, plus the line of every key and list entry."""

    def __init__(self, report: _Report, size: int = 0) -> None:
        self.lines: dict[DocPath, int] = {}
        #: Where a value was reported unreadable and left out: it was written, just not usable.
        self.unreadable: set[DocPath] = set()
        self._report = report
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()
        self.limit = self._budget = _MAX_VALUES + size

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            # Blame the place of the alias (its key), not the anchor it points back to.
            return self._give_up(path, "refers to itself through an alias", None)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return UNREADABLE
        finally:
            self._active.discard(id(node))

    def _give_up(self, path: DocPath, message: str, node: yaml.Node | None) -> object:
        self._report(path, message, _line(node) if node is not None else None)
        self.unreadable.add(path)
        return UNREADABLE

    def _scalar(self, node: yaml.ScalarNode, path: DocPath) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
            # The constructor remembers every node it built (for recursive documents, which
            # a scalar is not): forgotten at once, or 100,000 items keep 75 MB of nodes.
            self._constructor.constructed_objects.pop(node, None)
            return value
        # Dates like 2024-13-45, ints beyond the digit limit, unknown or unsafe tags.
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self._constructor.recursive_objects.clear()
            reason = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            return self._give_up(path, f"cannot read the value {got(node.value)}: {reason}", node)

    def _mapping(self, node: yaml.MappingNode, path: DocPath) -> Any:
        if node.tag != _MAP_TAG:
            return self._give_up(path, f"uses the YAML tag {node.tag!r}, not supported here", node)
        result: dict[str, Any] = {}
        # Merged entries (<<: *anchor) first, so that explicit keys override them, lines included.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path):
                    merged = self.build(source, path)
                    if isinstance(merged, dict):
                        for key, value in merged.items():
                            result.setdefault(key, value)
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path, first_line)
            if key is None:
                continue
            value = self.build(value_node, (*path, key))
            if value is UNREADABLE:
                result.pop(key, None)
            else:
                result[key] = value
        return result

    def _key(self, key_node: yaml.Node, path: DocPath, first_line: dict[str, int]) -> str | None:
        """The key of a mapping entry, its line recorded; None (reported) when the entry must
        be skipped: a key that is not a plain name, or one already in the mapping."""
        if not isinstance(key_node, yaml.ScalarNode):
            self._report(
                path, "a key must be a plain name, not a list or mapping", _line(key_node)
            )
            return None
        # Keys are names: the source text, so that `on:` or `1:` do not become true or 1.
        key = str(key_node.value)
        line = _line(key_node)
        if key in first_line:
            self._report(
                (*path, key),
                f"duplicate key '{key}' (first on line {first_line[key]}): YAML would "
                "silently keep only the last one",
                line,
            )
            return None
        first_line[key] = line
        self.lines[(*path, key)] = line
        return key

    def _merge_sources(self, node: yaml.Node, path: DocPath) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        self._report(path, "'<<' must be followed by a mapping or a list of mappings", _line(node))
        return []

    def _sequence(self, node: yaml.SequenceNode, path: DocPath) -> Any:
        if node.tag != _SEQ_TAG:
            return self._give_up(path, f"uses the YAML tag {node.tag!r}, not supported here", node)
        result: list[Any] = []
        for index, child in enumerate(node.value):
            self.lines[(*path, index)] = _line(child)
            value = self.build(child, (*path, index))
            # A placeholder keeps the indexes (and so the lines) of the following entries right.
            result.append(None if value is UNREADABLE else value)
        return result

    # -- straight from the event stream

    def document(self, loader: Any) -> Any:
        """The plain data of the stream's one document, built as its events go by.

        Composing first would hold a node with two marks for every value of the document at
        once: about 2 KB an item, 210 MB for 100,000 inline items, before a value is read.
        Here only what an alias may refer to (anchored values) and small parts (scalars, keys,
        tagged values) become nodes, through PyYAML's own composer, so values and lines are
        exactly those of :meth:`build` on the composed document. Raises yaml.YAMLError where
        the composer would, a second document included.
        """
        loader.get_event()  # stream start
        data = None
        if not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # document start
            self.lines[()] = int(loader.peek_event().start_mark.line) + 1
            data = self._streamed(loader, ())
            loader.get_event()  # document end
            loader.anchors = {}
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", None,
                "but found another document", event.start_mark,
            )
        return data

    def _streamed(self, loader: Any, path: DocPath) -> Any:
        event = loader.peek_event()
        if isinstance(event, yaml.MappingStartEvent):
            tag, default = event.tag, _MAP_TAG
        elif isinstance(event, yaml.SequenceStartEvent):
            tag, default = event.tag, _SEQ_TAG
        else:
            tag, default = None, None
        if default is None or event.anchor is not None or tag not in (None, "!", default):
            return self.build(loader.compose_node(None, None), path)
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        loader.get_event()
        if default == _SEQ_TAG:
            return self._streamed_sequence(loader, path)
        return self._streamed_mapping(loader, path)

    def _streamed_sequence(self, loader: Any, path: DocPath) -> list[Any]:
        result: list[Any] = []
        while not loader.check_event(yaml.SequenceEndEvent):
            at = (*path, len(result))
            self.lines[at] = self._next_line(loader)
            value = self._streamed(loader, at)
            result.append(None if value is UNREADABLE else value)
        loader.get_event()
        return result

    def _streamed_mapping(self, loader: Any, path: DocPath) -> dict[str, Any]:
        """As :meth:`_mapping`: merged entries never override a key written in the mapping,
        wherever the ``<<`` stands."""
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        while not loader.check_event(yaml.MappingEndEvent):
            key_node = loader.compose_node(None, None)
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(loader.compose_node(None, None), path):
                    merged = self.build(source, path)
                    if isinstance(merged, dict):
                        for key, value in merged.items():
                            if key not in first_line:
                                result.setdefault(key, value)
                # The merged keys' lines must not replace those of the keys written here.
                for key, line in first_line.items():
                    self.lines[(*path, key)] = line
                continue
            key = self._key(key_node, path, first_line)
            if key is None:
                loader.compose_node(None, None)  # the value goes unread, but it is consumed
                continue
            value = self._streamed(loader, (*path, key))
            if value is UNREADABLE:
                result.pop(key, None)
            else:
                result[key] = value
        loader.get_event()
        return result

    @staticmethod
    def _next_line(loader: Any) -> int:
        """The line of the next value; for an alias, that of the value it refers to (as the
        composed node would say)."""
        event = loader.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in loader.anchors:
            return _line(loader.anchors[event.anchor])
        return int(event.start_mark.line) + 1


class _StreamLoader(_COMPOSER, yaml.composer.Composer):  # type: ignore[misc]
    """The fast parser's events with PyYAML's Python composer on top, for the parts of a
    document that :meth:`_Builder.document` composes into nodes."""

    def __init__(self, text: str) -> None:
        _COMPOSER.__init__(self, text)
        self.anchors: dict[str, yaml.Node] = {}


def _yaml_error(exc: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    if isinstance(exc, yaml.MarkedYAMLError):
        problem, context = exc.problem, exc.context
        mark, context_mark = exc.problem_mark, exc.context_mark
        message = f"YAML syntax error: {problem or context or 'invalid document'}"
        if mark is not None and context_mark is not None and mark.index >= len(text.rstrip()):
            # Only noticed at the end of the file: what matters is where the unclosed
            # bracket or quote was opened.
            return f"{message} ({context} that starts here and is never closed)", (
                context_mark.line + 1
            )
        if problem and context:
            started = f" on line {context_mark.line + 1}" if context_mark is not None else ""
            message += f" ({context}{started})"
        if "'\\t'" in message:
            message += "; indent with spaces, not tabs"
        if problem == "mapping values are not allowed here":
            message += (
                "; a value that contains ': ' must be quoted, e.g. prompt: \"a cat: asleep\""
            )
        mark = mark or context_mark
        return message, (mark.line + 1 if mark is not None else None)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return f"YAML cannot read this file: {exc.reason} (character {exc.character!r})", line
    return f"YAML error: {exc}", None


def parse(text: str, sink: ProblemSink) -> Any:
    """The plain data of a manifest's one YAML document (None when empty), or
    :data:`UNREADABLE`; its lines and unreadable values go to ``sink``, with its problems."""
    builder = _builder(text, sink)
    reported = len(sink.found)
    try:
        try:
            loader = _StreamLoader(text)
            try:
                return builder.document(loader)
            finally:
                loader.dispose()
        except yaml.YAMLError:
            # Start again: the pure-Python composer words syntax errors better (it names a
            # tab), and what was reported before the error came from a broken document.
            del sink.found[reported:]
            builder = _builder(text, sink)
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        # Never found by line_of (it stops short of the empty path): for whole-document
        # problems only.
        sink.lines[()] = _line(node)
        return builder.build(node, ())
    except yaml.YAMLError as exc:
        message, line = _yaml_error(exc, text)
        sink.report((), message, line)
    except RecursionError:
        sink.report((), "the document is nested too deeply")
    except _TooLarge:
        sink.report((), f"the document expands to more than {builder.limit} values "
                    "(aliases?)")
    return UNREADABLE


def _builder(text: str, sink: ProblemSink) -> _Builder:
    builder = _Builder(sink.report, len(text))
    # Shared, not copied: problems found while building are located as they are reported.
    sink.lines = builder.lines
    sink.unreadable = builder.unreadable
    return builder
