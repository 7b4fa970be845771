"""Dual layer of Einsum with one variable operand: with the other operands constant, every output is a
fixed linear combination of the variable's entries (Corollary 1; the dual is the exact vector-Jacobian
product of :meth:`linear`). Built from the ONNX node's ``equation``: explicit subscripts, the variable's
first subscript (its batch axis) must be the output's first and appear in no constant operand; ``|A|`` is
the same contraction with the constant's absolute values when there is one constant operand."""

from __future__ import annotations

import torch
from torch import Tensor

from onnxdual.duals.base import AffineDual, NodeContext


def _terms(equation: str) -> tuple[list[str], str | None]:
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    return lhs.split(","), (rhs if arrow else None)


class EinsumDual(AffineDual):
    def __init__(self, ctx: NodeContext):
        super().__init__(ctx)
        if len(ctx.variable_positions) != 1:
            raise ctx.unsupported("an Einsum of several inputs that depend on the network input is not "
                                  "linear")
        equation = ctx.attributes.get("equation", "")
        equation = equation.decode() if isinstance(equation, bytes) else equation
        terms, out = _terms(equation)
        if "..." in equation or not all(t.isalpha() for t in terms) or (out is not None and not out.isalpha()
                                                                         and out != ""):
            raise ctx.unsupported(f"equation {equation!r}: only explicit subscripts are supported (no '...')")
        if out is None:  # implicit mode: the subscripts that appear once, in alphabetical order
            letters = "".join(terms)
            out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        (self.position,) = ctx.variable_positions
        batch = terms[self.position][:1]
        others = "".join(t for i, t in enumerate(terms) if i != self.position)
        if not batch or not out.startswith(batch) or batch in others:
            raise ctx.unsupported(f"equation {equation!r} does not keep the variable's batch axis first")
        self.equation = ",".join(terms) + "->" + out

    def _operands(self, x: Tensor, absolute: bool) -> list[Tensor]:
        ops = []
        for i, value in enumerate(self.ctx.inputs):
            if i == self.position:
                ops.append(x)
            else:
                value = value.to(x.dtype)
                ops.append(value.abs() if absolute else value)
        return ops

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def linear(self, x: Tensor) -> Tensor:
        return torch.einsum(self.equation, *self._operands(x, False))

    def abs_linear(self, r: Tensor) -> Tensor | None:
        if len(self.ctx.inputs) != 2:
            return None  # |C1 C2| <= |C1| |C2| only: an over-estimate, not |A|
        return torch.einsum(self.equation, *self._operands(r, True))


def einsum_dual(ctx: NodeContext) -> AffineDual:
    return EinsumDual(ctx)
