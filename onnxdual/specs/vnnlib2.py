"""VNN-LIB 2.0 reader, built on the reference parser (PyPI package ``vnnlib``, VNNLIB-CPP bindings).

What the reference parser gives us and what we take from it:

* ``vnnlib.parse_query_string`` does the parsing, scoping and (strict) type checking. Its errors come
  as JSON (type/scope errors, with line numbers) or as a plain "Parse error ... at line L" string; both
  are turned into a one-line :class:`SpecError`.
* For every assertion we call ``BoolExpr.to_dnf()`` (a list of clauses of ``Comparison`` nodes) and
  expand each side of each comparison into a polynomial (:class:`onnxdual.specs.joint.Polynomials`).
  The conjunction of all assertions, the split into input box / output constraints and the grouping into
  cases is ours (``assemble.py``), shared with the 1.0 reader.
* We deliberately do NOT use ``vnnlib.compat.transform``: it drops constraints (e.g. for
  ``(assert (and <input bounds>))`` + ``(assert (or <output clauses>))`` it returns one case with the
  output polytopes but an unbounded input box, and one case with the box but no output constraints).

Supported: any number of ``declare-network`` (``equal-to`` / ``isomorphic-to`` included), each with any
number of ``declare-input`` / ``declare-hidden`` / ``declare-output`` (any shape, any element type; tensors
are flattened in row-major order), and constraints that are polynomials in the declared variables. A query of
one network with one input and one output, bounds on single inputs and linear constraints on the output is a
plain property (columns: the output's elements); any other is the joint form of :mod:`onnxdual.specs.joint`.
``!=`` is rejected. Strict ``<``/``>`` are kept as strict atoms: proofs use their closure ``<=``/``>=``
(sound for "unsat", as for 1.0), while a witness must meet them strictly (unlike 1.0, whose VNN-COMP reading
is the closure).

Leniencies on top of the reference grammar (lexical only; line numbers are preserved):

* a missing ``(vnnlib-version <2.0>)`` header is supplied (the standard's own examples omit it, the
  reference parser requires it);
* numbers in scientific notation (``1e-3``), which the reference lexer rejects, are rewritten to the
  equal plain decimal;
* ``(= a b)`` (the spelling used in the standard's prose) is accepted as ``(== a b)``.

Integer literals compared with float variables stay a type error, as in the reference checker.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

from onnxdual.specs.assemble import build_property, conj, make_atom
from onnxdual.specs.joint import Polynomials, layout_of
from onnxdual.specs.model import Property, SpecError, UnsupportedSpecError
from onnxdual.specs.sexpr import Source, check_depth

_SCI_RE = re.compile(r"(?<![\w.])([+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+)(?![\w.])")
_EQ_RE = re.compile(r"\(\s*=(?=[\s(])")
_COMMENT_RE = re.compile(r";[^\n]*")
_VERSION_RE = re.compile(r"\(\s*vnnlib-version\b")
_LINE_RE = re.compile(r"\bline (\d+)")
_DECLARE_RE = re.compile(r"\(\s*declare-(?:input|output|hidden)\s+([^\s()]+)\s+([^\s()\[]+)")
#: the element types of the standard: the reference parser's ``DType`` names -> their VNN-LIB spelling (the
#: ONNX IR names, plus the extra ``Real``), which is what a query writes
ELEMENT_TYPES = {
    "Real": "Real", "F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16",
    "F8E4M3FN": "float8e4m3fn", "F8E5M2": "float8e5m2", "F8E4M3FNUZ": "float8e4m3fnuz",
    "F8E5M2FNUZ": "float8e5m2fnuz", "F4E2M1": "float4e2m1", "I8": "int8", "I16": "int16", "I32": "int32",
    "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "C64": "complex64",
    "C128": "complex128", "Bool": "bool", "String": "string",
}
#: decimal exponents beyond float64 (overflow, or underflow to zero well below the subnormals)
_MAX_EXPONENT, _MIN_EXPONENT = 308, -400


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def prepare_text(text: str, name: str = "<string>") -> str:
    """Apply the lexical leniencies listed in the module docstring (line numbers unchanged). A number whose
    magnitude float64 cannot hold (``1e999999999``) is refused here: writing it out would take gigabytes."""

    def plain_decimal(m: re.Match) -> str:
        value = Decimal(m.group(1))
        exponent = value.adjusted()
        if exponent > _MAX_EXPONENT:
            raise SpecError(f"{name}:{_line_at(text, m.start())}: number {m.group(1)[:40]} is out of range "
                            "(beyond float64)")
        if exponent < _MIN_EXPONENT:
            return "0.0"  # the same real as far as float64 (the parser's arithmetic) can tell
        s = format(value, "f")
        return s if "." in s else s + ".0"

    if not text.isascii():  # the grammar is ASCII; the reference parser fails to report anything else
        text = _COMMENT_RE.sub(lambda m: m.group().encode("ascii", "replace").decode(), text)
        bad = next((k for k, c in enumerate(text) if not c.isascii()), None)
        if bad is not None:
            raise SpecError(f"{name}:{_line_at(text, bad)}: unexpected character {text[bad]!r} (VNN-LIB is "
                            "ASCII outside comments)")
    text = _SCI_RE.sub(plain_decimal, text)
    text = _EQ_RE.sub("(==", text)
    if not _VERSION_RE.search(_COMMENT_RE.sub("", text)):
        text = "(vnnlib-version <2.0>) " + text
    return text


def _reference_error(name: str, exc: Exception) -> SpecError:
    msg = str(exc).strip()
    try:
        data = json.loads(msg)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("errors"):
        errs = data["errors"]
        e = errs[0]
        line = e.get("line")
        where = f"{name}:{line}" if isinstance(line, int) and line > 0 else name
        text = e.get("message", "error")
        if e.get("offendingSymbol"):
            text += f" at {e['offendingSymbol']!r}"
        if e.get("hint"):
            text += f": {e['hint']}"
        if len(errs) > 1:
            text += f" (and {len(errs) - 1} more errors)"
        return SpecError(f"{where}: {text}")
    m = _LINE_RE.search(msg)
    where = f"{name}:{m.group(1)}" if m else name
    return SpecError(f"{where}: {' '.join(msg.split())}")


def _line_of(node) -> int | None:
    stack = [node]
    while stack:
        n = stack.pop()
        line = getattr(n, "line", None)
        if isinstance(line, int) and line > 0:
            return line
        try:
            stack.extend(reversed(n.children()))
        except Exception:  # noqa: BLE001 - a node without children
            pass
    return None


def _label(name: str, shape: tuple, flat: int) -> str:
    if not shape:
        return name
    idx = []
    for d in reversed(shape):
        idx.append(flat % d)
        flat //= d
    return f"{name}[{','.join(str(i) for i in reversed(idx))}]"


def parse_reference_query(text: str, name: str = "<string>"):
    """The reference parser's query object for VNN-LIB 2.0 text; its errors become one-line
    :class:`SpecError` messages naming ``name``."""
    try:
        import vnnlib
    except ImportError as exc:  # pragma: no cover - vnnlib is a declared dependency
        raise SpecError(f"{name}: VNN-LIB 2.0 files need the 'vnnlib' package ({exc})") from None
    check_depth(Source(name, text))  # before the reference parser, which crashes on deep nesting
    try:
        query = vnnlib.parse_query_string(prepare_text(text, name))
    except vnnlib.VNNLibException as exc:
        raise _reference_error(name, exc) from None
    _check_element_types(text, name)
    return query


#: other spellings of the standard's element types: ``real`` is the reference parser's own spelling of
#: ``Real`` (vnnlib 1.0.2 types it ``DType.Real``, and ``Real`` as ``Unknown``); both mean the reals
SPELLINGS = {"real": "Real"}


def _check_element_types(text: str, name: str) -> None:
    """The reference parser (vnnlib 1.0.2) accepts any word as an element type; the standard knows only
    :data:`ELEMENT_TYPES` (and the :data:`SPELLINGS`)."""
    known = list(ELEMENT_TYPES.values()) + list(SPELLINGS)
    code = _COMMENT_RE.sub(lambda m: " " * len(m.group()), text)  # same offsets, so same line numbers
    for m in _DECLARE_RE.finditer(code):
        if m.group(2) not in known:
            raise SpecError(f"{name}:{_line_at(code, m.start())}: unknown element type {m.group(2)[:40]!r} "
                            f"of {m.group(1)[:40]} (known: {', '.join(ELEMENT_TYPES.values())})")


def parse_vnnlib2(text: str, name: str = "<string>") -> Property:
    """Parse VNN-LIB 2.0 text with the reference parser; ``name`` is used in error messages. A query beyond
    one input box and linear constraints on one output gets the joint form (:mod:`onnxdual.specs.joint`):
    the property's ``joint`` layout says how to build the network it is a property of."""
    query = parse_reference_query(text, name)
    import vnnlib  # importable: the query was parsed by it

    try:
        layout = layout_of(query)
    except SpecError as exc:
        raise SpecError(f"{name}: {exc}") from None
    polys = Polynomials(layout, vnnlib)
    tensors = [(n.name, t) for kind in ("inputs", "outputs", "hidden") for n in layout.networks
               for t in getattr(n, kind)]
    offsets = layout.offsets()
    n_in = layout.n_inputs

    def describe(line) -> str:
        return f"{name}:{line}" if line else name

    def value_label(k: int) -> str:
        for net, t in tensors:
            start = offsets[(net, t.name)]
            if start <= k < start + t.size:
                return _label(t.name, t.shape, k - start)
        return f"V[{k}]"

    def label(v: int) -> str:
        if v >= 0:
            return value_label(v)
        j = ~v
        base = layout.n_declared_outputs + layout.n_hidden
        if j < base:
            return value_label(n_in + j)
        term = list(polys.terms)[j - base]
        return "*".join(value_label(k) for k in term)

    def atoms_of(cmp) -> list:
        line = _line_of(cmp)
        if isinstance(cmp, vnnlib.NotEqual):
            raise UnsupportedSpecError(f"{describe(line)}: unsupported comparison '!=' ({str(cmp).strip()})")
        try:
            poly = polys.difference(cmp.lhs, cmp.rhs)
        except UnsupportedSpecError as exc:
            raise UnsupportedSpecError(f"{describe(line)}: {exc}") from None
        d, const = polys.signed(poly)
        strict = isinstance(cmp, (vnnlib.LessThan, vnnlib.GreaterThan))
        le = make_atom(d, -const, line, describe, label, strict)  # lhs <= rhs (lhs < rhs)
        ge = make_atom({v: -c for v, c in d.items()}, const, line, describe, label, strict)  # lhs >= rhs
        if isinstance(cmp, (vnnlib.LessEqual, vnnlib.LessThan)):
            return [le]
        if isinstance(cmp, (vnnlib.GreaterEqual, vnnlib.GreaterThan)):
            return [ge]
        if isinstance(cmp, vnnlib.Equal):
            return [le, ge]
        raise UnsupportedSpecError(f"{describe(line)}: unsupported comparison {str(cmp).strip()}")

    dnfs = []
    for assertion in query.assertions:
        dnf = []
        for clause in assertion.expr.to_dnf():
            dnf.extend(conj([a for cmp in clause for a in atoms_of(cmp)]))
        dnfs.append(dnf)
    layout = polys.layout_with_terms()
    if layout.is_plain:
        net = layout.networks[0]
        inp, out = net.inputs[0], net.outputs[0]
        meta = dict(input_shape=inp.shape, output_shape=out.shape, input_name=inp.name, output_name=out.name)
    else:
        meta = dict(input_shape=(layout.n_inputs,), output_shape=(layout.n_outputs,), input_name="X",
                    output_name="Y", joint=layout)
    return build_property(dnfs, layout.n_inputs, layout.n_outputs, source=name, describe=describe,
                          x_label=label, version="2.0", **meta)
