"""A minimal s-expression reader for SMT-LIB-style text (VNN-LIB 1.0).

Lists come back as :class:`SList` (a ``list`` that remembers the character offset of its ``(``, for error
messages); atoms are plain ``str``. Comments (``;`` to end of line) are dropped. String literals
``"..."`` and quoted symbols ``|...|`` are kept as single atoms (SMT-LIB ``set-info`` uses them).
"""

from __future__ import annotations

import re

from onnxdual.specs.model import SpecError, UnsupportedSpecError

#: the deepest nesting of parentheses accepted: real properties nest a handful of levels; the readers walk
#: terms recursively (and the 2.0 reference parser crashes the interpreter on ~100,000 levels)
MAX_DEPTH = 200

_TOKEN_RE = re.compile(r'[()]|;[^\n]*|"(?:[^"]|"")*"|\|[^|]*\||[^\s();"|]+|["|]')


class SList(list):
    """A parenthesised list; ``pos`` is the index of its opening parenthesis in the token stream
    (:meth:`Source.line` turns it into a line number)."""

    __slots__ = ("pos",)


class Source:
    """The text being parsed and its display name; turns token indices into line numbers for messages.
    Token offsets are only computed when an error message needs one (tokenising with ``findall`` keeps
    the common path fast)."""

    def __init__(self, name: str, text: str):
        self.name = name
        self.text = text
        self._offsets: list[int] | None = None

    def line(self, pos: int) -> int:
        """Line number (1-based) of token number ``pos``."""
        if self._offsets is None:
            self._offsets = [m.start() for m in _TOKEN_RE.finditer(self.text)]
        offset = self._offsets[pos] if 0 <= pos < len(self._offsets) else len(self.text)
        return self.text.count("\n", 0, offset) + 1

    def error(self, message: str, pos: int | None = None, unsupported: bool = False) -> SpecError:
        """A one-line error naming the file and line; ``unsupported`` for a well-formed construct onnxdual
        does not decide (:class:`UnsupportedSpecError`)."""
        where = self.name if pos is None else f"{self.name}:{self.line(pos)}"
        return (UnsupportedSpecError if unsupported else SpecError)(f"{where}: {message}")


def _too_deep(src: Source, pos: int) -> SpecError:
    return src.error(f"nested too deeply (more than {MAX_DEPTH} levels of parentheses)", pos)


def check_depth(src: Source) -> None:
    """Raise :class:`SpecError` if the parentheses of ``src.text`` nest deeper than :data:`MAX_DEPTH`
    (comments, strings and quoted symbols do not count); balance is left to the parser."""
    depth = 0
    for k, tok in enumerate(_TOKEN_RE.findall(src.text)):
        if tok == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(src, k)
        elif tok == ")":
            depth = max(0, depth - 1)


def read_sexprs(src: Source) -> list:
    """All top-level expressions of ``src.text``; raises :class:`SpecError` on unbalanced parentheses or an
    unterminated string / quoted symbol."""
    top = SList()
    top.pos = 0
    cur = top
    stack: list[SList] = []
    for k, tok in enumerate(_TOKEN_RE.findall(src.text)):
        c = tok[0]
        if c == "(":
            if len(stack) >= MAX_DEPTH:
                raise _too_deep(src, k)
            node = SList()
            node.pos = k
            cur.append(node)
            stack.append(cur)
            cur = node
        elif c == ")":
            if not stack:
                raise src.error("unbalanced parentheses: ')' without a matching '('", k)
            cur = stack.pop()
        elif c == ";":
            continue
        elif tok == '"' or tok == "|":
            what = "string" if tok == '"' else "quoted symbol"
            raise src.error(f"unterminated {what} starting here", k)
        else:
            cur.append(tok)
    if stack:
        outer = stack[1] if len(stack) > 1 else cur  # the outermost list still open
        raise src.error("unbalanced parentheses: '(' opened here is never closed", outer.pos)
    return top
