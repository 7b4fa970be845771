"""The *joint* form of a VNN-LIB 2.0 query that is more than "one input box, linear constraints on one
output": several networks (theories MNET / MENET / MINET), several input or output tensors (MIO), hidden
nodes (H), linear constraints over several inputs or mixing inputs with outputs (LIN), products of variables
(POLY).

Such a query is decided as an ordinary :class:`~onnxdual.specs.Property` of one joint network, which the
frontend builds from the declared networks' models (:func:`onnxdual.frontend.joint.joint_model`) after this
module's :class:`JointLayout`:

* the joint input is every declared input tensor, flattened and concatenated in declaration order (networks
  in order, each network's inputs in order): ``X`` indices of the property;
* the joint output is every declared output tensor, then every declared hidden node, then one extra entry
  per *term* (:attr:`JointLayout.terms`): the product of some of the values ``V`` = (joint input, outputs,
  hidden nodes). A term of one factor is a copy of an input (an input in a constraint that is not a bound on
  it alone); a term of several factors is a monomial of degree >= 2 (POLY).

Every constraint is then linear in the joint output (a bound on one input alone stays a bound of the input
box), so the property is exact: a point of the joint network is a point of the query and vice versa. Nothing
is relaxed here; the duals of ``Mul`` of two variables (McCormick) bound the products.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxdual.specs.model import SpecError, UnsupportedSpecError


@dataclass(frozen=True)
class JointTensor:
    """A declared input, hidden node or output: its VNN-LIB name, its ONNX name (``None``: matched by
    position among the model's inputs / outputs) and shape."""

    name: str
    onnx_name: str | None
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class JointNetwork:
    """A declared network; ``model`` names the network whose model file it runs (its own name, or the one
    it is declared ``equal-to``)."""

    name: str
    model: str
    inputs: tuple[JointTensor, ...]
    hidden: tuple[JointTensor, ...]
    outputs: tuple[JointTensor, ...]


@dataclass(frozen=True)
class JointLayout:
    """How the joint network's input and output are laid out (module docstring). ``terms[k]`` lists the
    indices into ``V`` (joint input, then outputs, then hidden nodes) whose product is output entry
    ``n_declared_outputs + n_hidden + k``."""

    networks: tuple[JointNetwork, ...]
    terms: tuple[tuple[int, ...], ...] = ()

    @property
    def n_inputs(self) -> int:
        return sum(t.size for n in self.networks for t in n.inputs)

    @property
    def n_declared_outputs(self) -> int:
        return sum(t.size for n in self.networks for t in n.outputs)

    @property
    def n_hidden(self) -> int:
        return sum(t.size for n in self.networks for t in n.hidden)

    @property
    def n_values(self) -> int:
        """The size of ``V``."""
        return self.n_inputs + self.n_declared_outputs + self.n_hidden

    @property
    def n_outputs(self) -> int:
        return self.n_declared_outputs + self.n_hidden + len(self.terms)

    def offsets(self) -> dict[tuple[str, str], int]:
        """``(network, variable) -> index in V`` of each declared tensor's first element."""
        out, k = {}, 0
        for kind in ("inputs", "outputs", "hidden"):
            for n in self.networks:
                for t in getattr(n, kind):
                    out[(n.name, t.name)] = k
                    k += t.size
        return out

    @property
    def is_plain(self) -> bool:
        """One network with one input and one output tensor, no hidden nodes and no terms: the property's
        ordinary form (no joint network needed)."""
        return (len(self.networks) == 1 and len(self.networks[0].inputs) == 1
                and len(self.networks[0].outputs) == 1 and not self.networks[0].hidden and not self.terms)


def _onnx_name(v) -> str | None:
    name = getattr(v, "onnx_name", None)
    return name.strip('"') if name else None


def layout_of(query) -> JointLayout:
    """The networks of a query of the reference parser (terms are added by :class:`Polynomials`)."""
    def tensor(v) -> JointTensor:
        return JointTensor(v.name, _onnx_name(v), tuple(int(d) for d in v.shape))

    nets = []
    for n in query.networks:
        model = n.equal_to or n.name
        nets.append(JointNetwork(n.name, model, tuple(map(tensor, n.inputs)), tuple(map(tensor, n.hidden)),
                                 tuple(map(tensor, n.outputs))))
    names = {n.name for n in nets}
    for n in nets:
        if n.model not in names:
            raise SpecError(f"network {n.name} is declared equal-to the undeclared network {n.model}")
    for n in nets:
        for h in n.hidden:
            if not h.onnx_name:
                raise SpecError(f"hidden node {h.name} of network {n.name} names no ONNX tensor")
    return JointLayout(tuple(nets))


class Polynomials:
    """Arithmetic expressions of the reference parser as polynomials over ``V`` (``{monomial: coeff}``, a
    monomial the sorted tuple of its factors' indices in ``V``, ``()`` the constant), and the signed variable
    encoding of :mod:`onnxdual.specs.assemble` for an atom: a bound on one input stays an input (``i >= 0``);
    everything else is an output entry (``~j``), terms allocated here as they appear."""

    def __init__(self, layout: JointLayout, vnnlib):
        self.layout = layout
        self.offsets = layout.offsets()
        self.shapes = {(n.name, t.name): t.shape for n in layout.networks
                       for t in n.inputs + n.outputs + n.hidden}
        self.vnnlib = vnnlib
        self.terms: dict[tuple[int, ...], int] = {}

    def index(self, var) -> int:
        key = (var.network_name, var.name)
        shape = self.shapes[key]
        flat = 0
        for i, d in zip(var.indices, shape):
            flat = flat * d + int(i)
        return self.offsets[key] + flat

    def of(self, expr) -> dict:
        v = self.vnnlib
        if isinstance(expr, v.Var):
            return {(self.index(expr),): 1.0}
        if isinstance(expr, v.Literal):
            return {(): float(expr.value)}
        if isinstance(expr, v.Negate):
            return {m: -c for m, c in self.of(expr.expr).items()}
        if isinstance(expr, v.Plus):
            return _add(*(self.of(a) for a in expr.args))
        if isinstance(expr, v.Minus):
            rest = [{m: -c for m, c in self.of(a).items()} for a in expr.rest]
            return _add(self.of(expr.head), *rest)
        if isinstance(expr, v.Multiply):
            out = {(): 1.0}
            for a in expr.args:
                out = _multiply(out, self.of(a))
            return out
        raise UnsupportedSpecError(f"unsupported arithmetic term {str(expr).strip()[:60]}")

    def difference(self, lhs, rhs) -> dict:
        """The polynomial ``lhs - rhs`` of two expressions."""
        return _add(self.of(lhs), {m: -c for m, c in self.of(rhs).items()})

    def signed(self, poly: dict) -> tuple[dict, float]:
        """``(coeffs, constant)`` of ``poly`` in the signed encoding (see the class docstring)."""
        n_in = self.layout.n_inputs
        constant = poly.get((), 0.0)
        monomials = [(m, c) for m, c in poly.items() if m and c != 0.0]
        if len(monomials) == 1 and len(monomials[0][0]) == 1 and monomials[0][0][0] < n_in:
            ((i,), c), = monomials
            return {i: c}, constant  # a bound on one input: the box
        coeffs: dict = {}
        base = self.layout.n_declared_outputs + self.layout.n_hidden
        for m, c in monomials:
            if len(m) == 1 and m[0] >= n_in:
                j = m[0] - n_in
            else:
                j = base + self.terms.setdefault(m, len(self.terms))
            coeffs[~j] = coeffs.get(~j, 0.0) + c
        return coeffs, constant

    def layout_with_terms(self) -> JointLayout:
        return JointLayout(self.layout.networks, tuple(self.terms))


def _add(*polys: dict) -> dict:
    out: dict = {}
    for p in polys:
        for m, c in p.items():
            out[m] = out.get(m, 0.0) + c
    return out


def _multiply(a: dict, b: dict) -> dict:
    out: dict = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0.0) + ca * cb
    return out
