"""VNN-LIB 1.0 reader (the SMT-LIB-style dialect used by VNN-COMP 2021-2025).

Supported:

* ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)`` (also ``(declare-fun X_i () Real)``);
  the declared ``X`` must be ``X_0 .. X_{n-1}`` (same for ``Y``), in any order;
* ``(assert F)``; all assertions are conjoined. ``F`` nests ``and``, ``or``, ``not``, ``true``, ``false``
  and comparisons ``<= >= < > =`` (chains such as ``(<= 0 X_0 1)`` allowed);
* linear terms: numbers (integer, decimal, scientific notation, leading sign), variables,
  ``(+ t ...)``, ``(- t)``, ``(- t u ...)``, ``(* c t)`` (at most one non-constant factor),
  ``(/ t c)`` (constant divisors);
* comments ``; ...``; the harmless SMT-LIB commands ``set-logic``, ``set-info``, ``set-option``,
  ``check-sat``, ``get-model``, ``exit`` are ignored.

Strict comparisons ``<``/``>`` are read as ``<=``/``>=`` (the closure of the set). This is sound for
verification: if no input reaches the closed unsafe region, none reaches the open one, so an "unsat"
answer stays correct. Likewise ``(not (= a b))`` is read as true (the closure of ``a != b`` is
everything). The only effect is that a point exactly on a strict boundary is accepted as a
counterexample by :func:`onnxdual.specs.is_violated`.

Equality ``(= a b)`` becomes ``a <= b`` and ``a >= b``.
"""

from __future__ import annotations

import math
import re

from onnxdual.specs.assemble import build_property, conj, dnf_and, dnf_or, make_atom
from onnxdual.specs.model import Property
from onnxdual.specs.sexpr import SList, Source, read_sexprs

_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_VAR_RE = re.compile(r"([XY])_(0|[1-9]\d*)\Z")
_IGNORED = {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"}
_COMPARISONS = {"<=", "<", ">=", ">", "="}


class _Reader:
    def __init__(self, src: Source):
        self.src = src
        self.vars: dict[str, int] = {}
        self.n_in = 0
        self.n_out = 0

    # -- helpers ---------------------------------------------------------------------------------
    def describe(self, pos) -> str:
        return f"{self.src.name}:{self.src.line(pos)}"

    def label(self, v: int) -> str:
        return f"X_{v}" if v >= 0 else f"Y_{~v}"

    def err(self, msg: str, pos: int | None = None):
        return self.src.error(msg, pos, unsupported=msg.startswith("unsupported"))

    # -- declarations ----------------------------------------------------------------------------
    def declare(self, cmd: SList) -> None:
        head = cmd[0]
        if head == "declare-const":
            ok = len(cmd) == 3
            name, sort = (cmd[1], cmd[2]) if ok else (None, None)
        else:  # declare-fun NAME () SORT
            ok = len(cmd) == 4 and isinstance(cmd[2], list) and not cmd[2]
            name, sort = (cmd[1], cmd[3]) if ok else (None, None)
        if not ok or not isinstance(name, str) or not isinstance(sort, str):
            raise self.err(f"malformed {head}: expected ({head} NAME Real)", cmd.pos)
        if sort != "Real":
            raise self.err(f"unsupported sort {sort!r} for {name} (only Real)", cmd.pos)
        m = _VAR_RE.match(name)
        if m is None:
            raise self.err(
                f"unsupported variable name {name!r}: VNN-LIB 1.0 variables are X_<i> (inputs) "
                "and Y_<j> (outputs)",
                cmd.pos,
            )
        if name in self.vars:
            raise self.err(f"variable {name} is declared twice", cmd.pos)
        idx = int(m.group(2))
        self.vars[name] = idx if m.group(1) == "X" else ~idx

    def check_declarations(self) -> None:
        xs = sorted(v for v in self.vars.values() if v >= 0)
        ys = sorted(~v for v in self.vars.values() if v < 0)
        for kind, idx in (("X", xs), ("Y", ys)):
            if idx and idx[-1] != len(idx) - 1:
                missing = next(i for i in range(len(idx)) if i != idx[i])
                raise self.err(
                    f"{kind}_{missing} is not declared although {kind}_{idx[-1]} is "
                    f"(variables must be {kind}_0 .. {kind}_{len(idx) - 1})"
                )
        self.n_in, self.n_out = len(xs), len(ys)

    # -- terms -----------------------------------------------------------------------------------
    def linear(self, node, pos: int) -> tuple[dict, float]:
        """``node`` as ``({var: coeff}, constant)``."""
        if isinstance(node, str):
            v = self.vars.get(node)
            if v is not None:
                return {v: 1.0}, 0.0
            if _NUMBER_RE.match(node):
                return {}, float(node)
            if _VAR_RE.match(node):
                raise self.err(f"unknown variable {node} (not declared)", pos)
            raise self.err(f"unknown symbol {node!r} in arithmetic term", pos)
        pos = node.pos
        if not node or not isinstance(node[0], str):
            raise self.err("malformed arithmetic term", pos)
        op, args = node[0], node[1:]
        if op == "+":
            if not args:
                raise self.err("'+' needs at least one argument", pos)
            return self._combine([self.linear(a, pos) for a in args], [1.0] * len(args))
        if op == "-":
            if not args:
                raise self.err("'-' needs at least one argument", pos)
            terms = [self.linear(a, pos) for a in args]
            if len(terms) == 1:
                return self._combine(terms, [-1.0])
            return self._combine(terms, [1.0] + [-1.0] * (len(terms) - 1))
        if op == "*":
            if not args:
                raise self.err("'*' needs at least one argument", pos)
            terms = [self.linear(a, pos) for a in args]
            var_terms = [t for t in terms if t[0]]
            if len(var_terms) > 1:
                names = [self.label(next(iter(t[0]))) for t in var_terms[:2]]
                raise self.err(f"non-linear term: product of variables ({names[0]} * {names[1]})", pos)
            scale = 1.0
            for t in terms:
                if not t[0]:
                    scale *= t[1]
            if not var_terms:
                return {}, scale
            coeffs, const = var_terms[0]
            return {v: c * scale for v, c in coeffs.items()}, const * scale
        if op == "/":
            if len(args) < 2:
                raise self.err("'/' needs at least two arguments", pos)
            coeffs, const = self.linear(args[0], pos)
            for a in args[1:]:
                dc, d = self.linear(a, pos)
                if dc:
                    name = self.label(next(iter(dc)))
                    raise self.err(f"non-linear term: division by a variable ({name})", pos)
                if d == 0.0:
                    raise self.err("division by zero", pos)
                coeffs = {v: c / d for v, c in coeffs.items()}
                const /= d
            return coeffs, const
        raise self.err(f"unsupported arithmetic operator {op!r} (non-linear or unknown)", pos)

    @staticmethod
    def _combine(terms, signs) -> tuple[dict, float]:
        coeffs: dict = {}
        const = 0.0
        for (tc, k), s in zip(terms, signs):
            const += s * k
            for v, c in tc.items():
                coeffs[v] = coeffs.get(v, 0.0) + s * c
        return coeffs, const

    def le_atom(self, a: tuple, b: tuple, pos: int):
        """Atom for ``a <= b`` with ``a``, ``b`` linear terms."""
        coeffs = dict(a[0])
        for v, c in b[0].items():
            coeffs[v] = coeffs.get(v, 0.0) - c
        return make_atom(coeffs, b[1] - a[1], pos, self.describe, self.label)

    def _simple_bound(self, op: str, a, b, pos: int):
        """Fast path for ``(op VAR NUMBER)`` / ``(op NUMBER VAR)`` (the bulk of every box); ``None`` when the
        comparison is anything else."""
        if not (isinstance(a, str) and isinstance(b, str)):
            return None
        v = self.vars.get(a)
        if v is not None:
            num, sign = b, 1.0  # VAR op NUMBER
        else:
            v = self.vars.get(b)
            if v is None:
                return None
            num, sign = a, -1.0  # NUMBER op VAR: flip
        if not _NUMBER_RE.match(num):
            return None
        value = float(num)
        if not math.isfinite(value):
            return None  # let the general path report it
        kind, idx = ("X", v) if v >= 0 else ("Y", ~v)
        le = (kind, {idx: sign}, sign * value, pos)  # sign*VAR <= sign*NUMBER  ("var on the small side")
        ge = (kind, {idx: -sign}, -sign * value, pos)
        if op in ("<=", "<"):
            return [[le]]
        if op in (">=", ">"):
            return [[ge]]
        return [[le, ge]]

    # -- formulas --------------------------------------------------------------------------------
    def formula(self, node, neg: bool, pos: int) -> list:
        """DNF of ``node`` (negated if ``neg``)."""
        if isinstance(node, str):
            if node in ("true", "false"):
                return [[]] if (node == "true") != neg else []
            raise self.err(f"expected a boolean formula, got {node!r}", pos)
        pos = node.pos
        if not node or not isinstance(node[0], str):
            raise self.err("malformed formula", pos)
        op, args = node[0], node[1:]
        if op in ("and", "or"):
            is_and = (op == "and") != neg
            parts = [self.formula(a, neg, pos) for a in args]
            where = lambda: self.describe(pos)  # noqa: E731 - only evaluated for an error message
            return dnf_and(parts, where) if is_and else dnf_or(parts, where)
        if op == "not":
            if len(args) != 1:
                raise self.err("'not' takes exactly one argument", pos)
            return self.formula(args[0], not neg, pos)
        if op in _COMPARISONS:
            if len(args) < 2:
                raise self.err(f"comparison {op!r} needs at least two arguments", pos)
            if len(args) == 2 and not neg:
                fast = self._simple_bound(op, args[0], args[1], pos)
                if fast is not None:
                    return fast
            terms = [self.linear(a, pos) for a in args]
            pairs = list(zip(terms, terms[1:]))
            if op == "=":
                if neg:  # the closure of a != b is everything
                    return [[]]
                return conj(x for a, b in pairs for x in (self.le_atom(a, b, pos), self.le_atom(b, a, pos)))
            # a <= b (or a >= b); a negated comparison is closed: not (a <= b) -> a >= b
            less = (op in ("<=", "<")) != neg
            atoms = [self.le_atom(a, b, pos) if less else self.le_atom(b, a, pos) for a, b in pairs]
            if not neg:
                return conj(atoms)
            # not (p and q) = (not p) or (not q)
            return dnf_or([conj([x]) for x in atoms], lambda: self.describe(pos))
        raise self.err(f"unsupported operator {op!r} in formula", pos)

    # -- driver ----------------------------------------------------------------------------------
    def read(self) -> Property:
        commands = read_sexprs(self.src)
        asserts = []
        for cmd in commands:
            if not isinstance(cmd, SList):
                raise self.err(f"unexpected token {cmd!r} at top level (expected a command in parentheses)")
            if not cmd or not isinstance(cmd[0], str):
                raise self.err("malformed command", cmd.pos)
            head = cmd[0]
            if head in ("declare-const", "declare-fun"):
                self.declare(cmd)
            elif head == "assert":
                if len(cmd) != 2:
                    raise self.err("'assert' takes exactly one formula", cmd.pos)
                asserts.append(cmd)
            elif head in _IGNORED:
                continue
            else:
                raise self.err(f"unsupported command {head!r}", cmd.pos)
        self.check_declarations()
        dnfs = [self.formula(cmd[1], False, cmd.pos) for cmd in asserts]
        return build_property(
            dnfs,
            self.n_in,
            self.n_out,
            source=self.src.name,
            describe=self.describe,
            x_label=self.label,
            version="1.0",
        )


def parse_vnnlib1(text: str, name: str = "<string>") -> Property:
    """Parse VNN-LIB 1.0 text; ``name`` is used in error messages."""
    return _Reader(Source(name, text)).read()


__all__ = ["parse_vnnlib1"]
