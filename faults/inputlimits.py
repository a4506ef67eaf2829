"""Bounded reading of every file faultdrill parses: no input file can exhaust time, memory or the stack.

Specs, game-day plans, runbooks, alert rules, Chaos Toolkit experiments and journals all come
through here. Each limit is checked *before or while* the input is parsed, never after, and a
file over one is a located :class:`~faults.errors.ConfigError` (the CLI: one line, exit 2)::

    MAX_TEXT_BYTES     1 MiB    a spec, plan, runbook, rules file or CTK experiment (the largest
                                shipped one, target_service/alerts/rules.yml, is 25 KiB)
    MAX_YAML_DEPTH     64       nesting levels (the shipped files nest at most 8 deep)
    MAX_YAML_NODES     20,000   nodes after alias expansion: an alias counts its anchor's whole
                                subtree each time it is used (the largest shipped file has 544)
    MAX_JOURNAL_BYTES  512 MiB  a journal, also a ``.json.gz`` one decompressed (a journal keeps
                                ~200 bytes per timeline event; hours of events fit)
    JSON_DEPTH_LIMIT   200      pydantic-core's JSON parser (jiter) refuses deeper documents

Why some of this is hand-written: PyYAML has no limit on aliases, nodes or depth (its
"billion laughs" issue, yaml/pyyaml#235, is open since 2018) and neither has ruamel.yaml. Its
composer recurses once per nesting level, so 2,000 nested ``[`` end in a ``RecursionError``; its
constructor shares aliased objects, so a 10-line alias bomb *loads* fast and then explodes in
whatever walks the result (the loader's position walk, pydantic: gigabytes). So the events
still come from libyaml's C parser (PyYAML's pure-Python parser where libyaml is missing) and
only the composer — thirty lines of PyYAML's own :class:`yaml.composer.Composer` — is
subclassed to count depth and nodes as each node is composed and to charge every alias the
size of what it names, refusing the first node over a limit with its line and column. JSON
needs nothing hand-written: pydantic-core parses without Python recursion and refuses depth
over 200 with the line and column; ``json.loads`` (kept where its messages are part of the
interface) is guarded by :func:`json_depth_error`.

Example::

    text = read_text(path, what="experiment")                  # size first, then UTF-8
    data = load_yaml(text, str(path))                          # like yaml.safe_load, bounded
    loader = yaml_loader(text, str(path)); node = loader.get_single_node()   # nodes with marks
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from faultdrill.faults.errors import ConfigError

__all__ = [
    "JSON_DEPTH_LIMIT",
    "MAX_JOURNAL_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "decode_utf8",
    "gunzip_bounded",
    "json_depth_error",
    "load_yaml",
    "one_line",
    "read_bytes",
    "read_text",
    "safe_load",
    "yaml_error",
    "yaml_loader",
]

MAX_TEXT_BYTES = 1 << 20
"""Bytes of a spec, plan, runbook, rules file or Chaos Toolkit experiment."""
MAX_YAML_DEPTH = 64
"""Nesting levels of a YAML document (the root is level 0); an alias adds the depth of what it names."""
MAX_YAML_NODES = 20_000
"""Nodes of a YAML document after alias expansion (keys count; an alias counts its anchor's subtree per use)."""
MAX_JOURNAL_BYTES = 512 << 20
"""Bytes of a journal (of a ``.json.gz`` journal: decompressed)."""
JSON_DEPTH_LIMIT = 200
"""Nesting levels pydantic-core's JSON parser accepts (fixed in pydantic-core; stated here for the docs)."""


_ONE_LINE = {c: f"\\x{c:02x}" for c in (*range(32), 0x7F, 0x85)} | {
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str, limit: int = 300) -> str:
    """``text`` as one printable line of at most ``limit`` characters (control characters and line
    separators escaped): user text quoted in an error must not break the error's single line."""
    text = text.translate(_ONE_LINE)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _too_big(file: str, what: str, size: int | None, limit: int, how: str = "") -> ConfigError:
    shown = f"{_size(size)}" if size is not None else f"more than {_size(limit)}"
    return ConfigError(f"{what} is too large{how} ({shown})", file=file,
                       expected=f"at most {_size(limit)}, faultdrill's limit for {what}s")  # fmt: skip


def read_bytes(path: str | Path, *, limit: int = MAX_TEXT_BYTES, what: str = "file") -> bytes:
    """The bytes of ``path``, at most ``limit`` of them: a larger regular file is refused before it is
    read, a pipe after ``limit + 1`` bytes, a device (``/dev/zero``, a terminal) at once. ``OSError``
    (missing, a directory, no permission) passes through for the caller to word."""
    file = str(path)
    if "\0" in file:  # open() would raise ValueError, which callers do not expect from a file name
        raise ConfigError("cannot read: the file name contains a NUL byte", file=one_line(file))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO without a writer: no hang in open
    with os.fdopen(fd, "rb") as fh:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            raise ConfigError("not a regular file (a device or socket)", file=file, expected=f"a {what}")
        if st.st_size > limit:
            raise _too_big(file, what, st.st_size, limit)
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise _too_big(file, what, None, limit)
    return raw


def decode_utf8(raw: bytes, file: str) -> str:
    """UTF-8 text, or a ConfigError at the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=file, line=line,
                          column=column, expected="a UTF-8 text file") from None  # fmt: skip


def read_text(path: str | Path, *, limit: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """:func:`read_bytes` then :func:`decode_utf8`."""
    return decode_utf8(read_bytes(path, limit=limit, what=what), str(path))


def gunzip_bounded(raw: bytes, file: str, *, limit: int = MAX_JOURNAL_BYTES, what: str = "journal") -> bytes:
    """Decompress gzip data to at most ``limit`` bytes (a gzip bomb stops there, not at the end of memory)."""
    out = bytearray()
    data = raw
    try:
        while data:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member per round (gzip allows several)
            while data and not d.eof:
                out += d.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise _too_big(file, what, None, limit, " once decompressed")
                data = d.unconsumed_tail
            if not d.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            data = d.unused_data.lstrip(b"\0")  # trailing zero padding is allowed, as gzip.decompress does
    except zlib.error as exc:
        raise gzip.BadGzipFile(str(exc)) from None
    return bytes(out)


def json_depth_error(raw: bytes | str, file: str, what: str, detail: str | None = None) -> ConfigError:
    """The located error for JSON nested too deeply (call it on ``json.loads``' ``RecursionError``, or
    with pydantic-core's own "recursion limit exceeded at line L column C" as ``detail``)."""
    import pydantic_core

    if detail is None:  # locate it: pydantic-core stops at its limit, with the position, and no recursion
        try:
            pydantic_core.from_json(raw)
        except ValueError as exc:
            detail = str(exc)
    m = re.search(r"at line (\d+) column (\d+)", detail or "")
    line, column = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    return ConfigError(f"not {what}: nested too deeply", file=file, line=line, column=column,
                       expected=f"at most {JSON_DEPTH_LIMIT} levels of nesting")  # fmt: skip


# -- YAML --------------------------------------------------------------------------------------------
def _path_text(path: list[Any]) -> str | None:
    parts = [f"[{p}]" if isinstance(p, int) else f".{one_line(str(p), 40)}" for p in path]
    if len(parts) > 8:  # a field path for a person: its start and its end
        parts = [*parts[:4], ".…", *parts[-3:]]
    return "".join(parts).lstrip(".") or None


class _BoundedComposer(Composer):
    """PyYAML's composer, counting as it composes (see the module docstring)."""

    if TYPE_CHECKING:  # from the parser it is mixed with

        def check_event(self, *choices: type) -> bool: ...
        def peek_event(self) -> Any: ...

    def _init_bounds(self, file: str, max_depth: int, max_nodes: int) -> None:
        self.bound_file, self.max_depth, self.max_nodes = file, max_depth, max_nodes
        self._nodes = 0  # composed so far, aliases expanded
        self._depth = -1  # of the node being composed (the root is 0)
        self._deepest = 0  # deepest level reached inside the node being composed
        self._path: list[Any] = []
        self._sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) → (its nodes, its height)

    def _refuse(self, message: str, mark: Any, expected: str) -> ConfigError:
        return ConfigError(message, file=self.bound_file, line=mark.line + 1 if mark else None,
                           column=mark.column + 1 if mark else None, field=_path_text(self._path),
                           expected=expected)  # fmt: skip

    def _too_deep(self, mark: Any) -> ConfigError:
        return self._refuse(f"nested more than {self.max_depth} levels deep", mark,
                            f"at most {self.max_depth} levels of nesting, aliases expanded")  # fmt: skip

    def _too_many(self, mark: Any) -> ConfigError:
        return self._refuse(f"more than {self.max_nodes:,} YAML nodes", mark,
                            f"at most {self.max_nodes:,} nodes, an alias counting the nodes it names each "
                            "time it is used")  # fmt: skip

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if isinstance(parent, SequenceNode):
            self._path.append(index)
        elif isinstance(parent, MappingNode) and index is not None:
            self._path.append(index.value if isinstance(index, ScalarNode) else "?")
        try:
            return self._compose_bounded(parent, index)
        finally:
            if isinstance(parent, SequenceNode) or (isinstance(parent, MappingNode) and index is not None):
                self._path.pop()

    def _compose_bounded(self, parent: Node | None, index: Any) -> Node | None:
        depth = self._depth + 1
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._sizes:
                    raise self._refuse(f"alias *{event.anchor} is used inside its own anchor (a recursive "
                                       "structure)", event.start_mark, "an alias to a complete node")  # fmt: skip
                size, height = self._sizes[id(node)]
                if depth + height > self.max_depth:
                    raise self._too_deep(event.start_mark)
                self._nodes += size
                if self._nodes > self.max_nodes:
                    raise self._too_many(event.start_mark)
                self._deepest = max(self._deepest, depth + height)
            return super().compose_node(parent, index)  # an undefined alias: PyYAML's own error
        event = self.peek_event()
        if depth > self.max_depth:
            raise self._too_deep(event.start_mark)
        self._nodes += 1
        if self._nodes > self.max_nodes:
            raise self._too_many(event.start_mark)
        saved_depth, saved_deepest, start = self._depth, self._deepest, self._nodes
        self._depth, self._deepest = depth, depth
        try:
            node = super().compose_node(parent, index)
        finally:
            height = self._deepest - depth
            self._depth, self._deepest = saved_depth, max(saved_deepest, self._deepest)
        if getattr(event, "anchor", None) is not None:
            self._sizes[id(node)] = (self._nodes - start + 1, height)
        return node


def _base_parser() -> tuple[type, ...]:
    try:
        from yaml._yaml import CParser  # libyaml, as yaml.CSafeLoader uses it
    except ImportError:  # pragma: no cover - PyYAML built without libyaml
        return (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)
    return (CParser,)


class BoundedLoader(_BoundedComposer, *_base_parser(), SafeConstructor, Resolver):  # type: ignore[misc]
    """``yaml.SafeLoader``'s behaviour (the C parser's speed when libyaml is there) with the bounds."""

    def __init__(self, stream: str | bytes, file: str = "<string>", *, max_depth: int = MAX_YAML_DEPTH,
                 max_nodes: int = MAX_YAML_NODES) -> None:  # fmt: skip
        bases: tuple[Any, ...] = _base_parser()
        if len(bases) == 1:
            bases[0].__init__(self, stream)
        else:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._init_bounds(file, max_depth, max_nodes)


def yaml_loader(text: str, file: str, *, max_depth: int = MAX_YAML_DEPTH,
                max_nodes: int = MAX_YAML_NODES) -> BoundedLoader:  # fmt: skip
    """A safe loader over ``text`` that refuses documents over the limits (a ConfigError naming ``file``)
    while composing; use ``get_single_node()`` then ``construct_document(node)``, and ``dispose()``."""
    return BoundedLoader(text, file, max_depth=max_depth, max_nodes=max_nodes)


def yaml_error(exc: yaml.YAMLError, file: str, prefix: str = "invalid YAML", text: str | None = None) -> ConfigError:
    """A PyYAML error as a located ConfigError (``prefix: context problem`` at the problem's mark; a
    character the reader refuses is located in ``text`` when it is given)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        return ConfigError(one_line(f"{prefix}: {what}"), file=file, line=mark.line + 1 if mark else None,
                           column=mark.column + 1 if mark else None)  # fmt: skip
    if isinstance(exc, yaml.reader.ReaderError):
        line = column = None
        if text is not None:  # libyaml counts bytes of the UTF-8 text
            before = text.encode("utf-8", "surrogatepass")[: exc.position]
            last_line = before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")
            line, column = before.count(b"\n") + 1, len(last_line) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)  # libyaml: an int
        return ConfigError(f"{prefix}: {exc.reason} (character #x{code:04x})", file=file, line=line,
                           column=column)  # fmt: skip
    return ConfigError(one_line(f"{prefix}: {exc}"), file=file)


def safe_load(text: str, file: str, *, max_depth: int = MAX_YAML_DEPTH, max_nodes: int = MAX_YAML_NODES) -> Any:
    """A drop-in ``yaml.safe_load(text)`` within the limits: YAML syntax errors stay ``yaml.YAMLError`` (for
    callers that word them), a document over a limit is a ConfigError naming ``file``."""
    loader = yaml_loader(text, file, max_depth=max_depth, max_nodes=max_nodes)
    try:
        node = loader.get_single_node()
        return None if node is None else loader.construct_document(node)
    except RecursionError:  # the bounds make this unreachable; a traceback must stay impossible anyway
        raise ConfigError("nested too deeply", file=file, expected=f"at most {max_depth} levels of nesting") from None
    finally:
        loader.dispose()


def load_yaml(text: str, file: str, *, max_depth: int = MAX_YAML_DEPTH, max_nodes: int = MAX_YAML_NODES,
              prefix: str = "invalid YAML") -> Any:  # fmt: skip
    """:func:`safe_load` with every problem a located ConfigError naming ``file`` (``prefix: …`` for
    syntax errors); None for an empty document, as PyYAML."""
    try:
        return safe_load(text, file, max_depth=max_depth, max_nodes=max_nodes)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, file, prefix, text) from None
