"""Shared back end of the VNN-LIB readers: linear atoms -> disjunctive normal form -> :class:`Property`.

Both readers (1.0 and 2.0) reduce every assertion to a DNF: a list of clauses, each a list of *atoms*
``sum_v coeff_v * v <= rhs``. Variables are ints: input ``X_i`` is ``i`` (``>= 0``) and output ``Y_j``
is ``~j`` (``< 0``). An atom is stored as ``(kind, coeffs, rhs, loc)`` with ``kind`` ``"X"`` or ``"Y"``,
``coeffs`` ``{index: coeff}`` (indices of that kind, non-negative), ``loc`` a source location for error
messages, and optionally a fifth element ``strict`` (the source said ``<``: ``sum < rhs``; VNN-LIB 2.0 only,
1.0 reads ``<`` as ``<=`` as VNN-COMP does). Proofs use the closure (sound for "unsat"); a witness must meet
the strict inequality itself (:class:`OutputConstraint`, :class:`InputRegion`). Atoms mixing inputs and
outputs are rejected; atoms without variables are decided on the spot.

The assertions are conjoined: single-clause assertions (the usual box bounds) form a common part, the
multi-clause ones are multiplied out. Each resulting clause splits into input atoms (which must be
single-variable bounds: they intersect the box) and output atoms (rows of ``A @ y <= b``). Clauses with
the same input box are grouped into one case.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Callable

import numpy as np

from onnxdual.specs.model import InputRegion, OutputConstraint, Property, SpecError, UnsupportedSpecError

TRUE = "true"  # atom that always holds (dropped)
FALSE = "false"  # atom that never holds (kills its clause)

#: Upper limit on the number of clauses after multiplying out disjunctive assertions.
MAX_CLAUSES = 100_000


def make_atom(
    coeffs: dict, rhs: float, loc, describe: Callable[[object], str], var_label: Callable[[int], str],
    strict: bool = False,
):
    """Build the atom ``sum coeffs[v] * v <= rhs`` (``< rhs`` if ``strict``; ``v`` in the signed encoding).
    Returns :data:`TRUE`,
    :data:`FALSE` or an atom tuple; raises :class:`SpecError` for an inequality mixing inputs and outputs
    or for non-finite numbers."""
    xs = {}
    ys = {}
    for v, c in coeffs.items():
        if c == 0.0:
            continue
        if v >= 0:
            xs[v] = c
        else:
            ys[~v] = c
    if not math.isfinite(rhs) or any(not math.isfinite(c) for c in coeffs.values()):
        raise SpecError(f"{describe(loc)}: constraint has a non-finite coefficient or bound")
    if xs and ys:
        names = ", ".join(var_label(v) for v in (min(xs), ~min(ys)))
        raise UnsupportedSpecError(
            f"{describe(loc)}: unsupported constraint mixing input and output variables ({names}) "
            "in one inequality"
        )
    if xs:
        return ("X", xs, rhs, loc, strict)
    if ys:
        return ("Y", ys, rhs, loc, strict)
    return TRUE if (0.0 < rhs if strict else 0.0 <= rhs) else FALSE


def is_strict(atom) -> bool:
    """Whether ``atom`` is a strict inequality (see the module docstring)."""
    return len(atom) > 4 and bool(atom[4])


def conj(atoms) -> list:
    """DNF of a conjunction of atoms (drops TRUE, empty DNF if any atom is FALSE)."""
    out = []
    for a in atoms:
        if a is FALSE:
            return []
        if a is not TRUE:
            out.append(a)
    return [out]


def dnf_and(parts: list, where: Callable[[], str]) -> list:
    """DNF of the conjunction of several DNFs; ``where()`` names the formula in error messages."""
    result = [[]]
    for part in parts:
        if not part:
            return []
        if len(part) == 1:
            only = part[0]
            for clause in result:
                clause.extend(only)
            continue
        if len(result) * len(part) > MAX_CLAUSES:
            raise SpecError(f"{where()}: formula expands to more than {MAX_CLAUSES} disjuncts")
        result = [c + p for c in result for p in part]
    return result


def dnf_or(parts: list, where: Callable[[], str]) -> list:
    """DNF of the disjunction of several DNFs."""
    out = []
    for part in parts:
        out.extend(part)
    if len(out) > MAX_CLAUSES:
        raise SpecError(f"{where()}: formula has more than {MAX_CLAUSES} disjuncts")
    return out


def _apply_input_atoms(lower: list, upper: list, atoms, describe, x_label, w_lower: list, w_upper: list) -> None:
    """Intersect the box ``[lower, upper]`` with single-variable bounds, and the witness box ``[w_lower,
    w_upper]`` with the float64 values that meet them exactly: a bound ``rhs / c`` that float64 cannot
    represent is rounded outwards for the box (a larger box is sound for proofs) and inwards for witnesses,
    and a strict bound excludes its own value from the witness box."""
    for atom in atoms:
        _, coeffs, rhs, loc = atom[:4]
        if len(coeffs) != 1:
            names = ", ".join(x_label(i) for i in sorted(coeffs)[:3])
            raise UnsupportedSpecError(
                f"{describe(loc)}: unsupported input constraint over several inputs ({names}); "
                "input sets must be boxes (bounds on single variables)"
            )
        ((i, c),) = coeffs.items()
        nearest = rhs / c + 0.0  # + 0.0 turns -0.0 into 0.0
        inexact = abs(c) != 1.0 and Fraction(nearest) * Fraction(c) != Fraction(rhs)
        inward = -math.inf if c > 0 else math.inf  # c > 0: x_i <= rhs / c; c < 0: x_i >= rhs / c
        bound = math.nextafter(nearest, -inward) if inexact else nearest
        met = _witness_limit(nearest, c, rhs, is_strict(atom), inward)
        if c > 0:
            upper[i], w_upper[i] = min(upper[i], bound), min(w_upper[i], met)
        else:
            lower[i], w_lower[i] = max(lower[i], bound), max(w_lower[i], met)


def _witness_limit(value: float, c: float, rhs: float, strict: bool, inward: float) -> float:
    """The float64 nearest ``value`` on the ``inward`` side (towards ``-inf`` or ``+inf``) whose ``c * x``
    meets ``<= rhs`` (``< rhs`` if ``strict``) exactly."""
    def meets(x: float) -> bool:
        product, limit = Fraction(x) * Fraction(c), Fraction(rhs)
        return product < limit if strict else product <= limit

    x = value
    while math.isfinite(x) and not meets(x):  # at most a few steps: value is within one rounding of the limit
        x = math.nextafter(x, inward)
    return x + 0.0


def _output_constraint(atoms, n_out: int) -> OutputConstraint:
    A = np.zeros((len(atoms), n_out), dtype=np.float64)
    b = np.empty(len(atoms), dtype=np.float64)
    strict = np.zeros(len(atoms), dtype=bool)
    for r, atom in enumerate(atoms):
        _, coeffs, rhs, _ = atom[:4]
        for j, c in coeffs.items():
            A[r, j] += c
        b[r] = rhs + 0.0
        strict[r] = is_strict(atom)
    return OutputConstraint(A, b, strict if strict.any() else None)


def build_property(
    assertion_dnfs: list,
    n_in: int,
    n_out: int,
    *,
    source: str,
    describe: Callable[[object], str],
    x_label: Callable[[int], str],
    **meta,
) -> Property:
    """Conjoin the DNFs of all assertions and turn the result into a :class:`Property` (see module doc).
    Raises :class:`SpecError` for unbounded inputs, empty boxes and too many disjuncts."""
    common: list = []
    multi: list = []
    for dnf in assertion_dnfs:
        if not dnf:  # an assertion that can never hold: no counterexample anywhere
            return Property(n_in, n_out, [], source=source, **meta)
        if len(dnf) == 1:
            common.extend(dnf[0])
        else:
            multi.append(dnf)
    total = math.prod(len(d) for d in multi)
    if total > MAX_CLAUSES:
        raise SpecError(f"{source}: the assertions expand to {total} disjuncts (limit {MAX_CLAUSES})")

    base = [[-math.inf] * n_in, [math.inf] * n_in, [-math.inf] * n_in, [math.inf] * n_in]  # box, witness box
    _apply_input_atoms(*base[:2], [a for a in common if a[0] == "X"], describe, x_label, *base[2:])
    common_y = [a for a in common if a[0] == "Y"]

    groups: dict = {}  # box and witness box -> ([lower, upper, w_lower, w_upper], [OutputConstraint])
    for combo in itertools.product(*multi):
        x_atoms = []
        y_atoms = list(common_y)
        for clause in combo:
            for a in clause:
                (x_atoms if a[0] == "X" else y_atoms).append(a)
        box = base
        if x_atoms:
            box = [list(v) for v in base]
            _apply_input_atoms(*box[:2], x_atoms, describe, x_label, *box[2:])
        entry = groups.setdefault(tuple(tuple(v) for v in box), (box, []))
        entry[1].append(_output_constraint(y_atoms, n_out))

    cases = []
    for k, ((lower, upper, w_lower, w_upper), conjunctions) in enumerate(groups.values()):
        lo = np.array(lower, dtype=np.float64)
        up = np.array(upper, dtype=np.float64)
        where = f" (input disjunct {k + 1} of {len(groups)})" if len(groups) > 1 else ""
        unbounded = np.flatnonzero(np.isinf(lo) | np.isinf(up))
        if unbounded.size:
            i = int(unbounded[0])
            side = "lower" if math.isinf(lower[i]) else "upper"
            more = f" (and {unbounded.size - 1} more unbounded inputs)" if unbounded.size > 1 else ""
            raise SpecError(f"{source}: unbounded input: {x_label(i)} has no {side} bound{where}{more}")
        empty = np.flatnonzero(lo > up)
        if empty.size:
            i = int(empty[0])
            raise SpecError(
                f"{source}: empty input box: {x_label(i)} has lower bound {lower[i]!r} > upper bound "
                f"{upper[i]!r}{where}"
            )
        w_lo, w_up = np.array(w_lower, dtype=np.float64), np.array(w_upper, dtype=np.float64)
        exact = bool(np.array_equal(w_lo, lo) and np.array_equal(w_up, up))
        cases.append((InputRegion(lo, up, None if exact else w_lo, None if exact else w_up), conjunctions))
    return Property(n_in, n_out, cases, source=source, **meta)
