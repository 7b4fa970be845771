"""Fast bounds of ReLU branch-and-bound domains, and the choice of the next split.

**Bounds on inherited intermediate bounds.** A child domain lies inside its parent, so every pre-activation
bound of the parent is a bound of the child too; the split itself only clamps one unit (``l_j = 0`` or
``u_j = 0``). A child is therefore bounded with its parent's intermediate bounds (the split unit clamped)
and *only the objective* is recomputed: one backward pass of the dual network (eq. 8) on the property's
rows per step, instead of one pass per unit of every layer. On top of it the lower slopes ``alpha`` (one
set per row, as in alpha-CROWN) and the split multipliers ``beta >= 0`` (beta-CROWN: ``-beta x_j`` for
``x_j >= 0``, ``+beta x_j`` for ``x_j <= 0``, never positive on the domain) are tuned by projected Adam
ascent, warm-started from the parent's values. Soundness does not depend on any of this: the faces are
sound for every slope in ``[0, 1]`` on valid bounds, every ``beta >= 0`` keeps the bound a bound, and the
result is the best iterate per row.

**Branching.** The intercept score of BaBSR (Bunel et al. 2020): an unstable unit's upper face costs the
bound ``[-nu_j]_+ * (-l_j u_j / (u_j - l_j))`` (``nu`` the dual variable at the ReLU's output, eq. 8),
computed for every unit of every domain at once; optionally filtered (FSB, De Palma et al. 2021): the
top-``k`` candidates of each domain are re-bounded cheaply (one pass, parent's slopes and multipliers) and
the candidate whose worse child is best wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, ElementwiseFace, Faces
from onnxdual.duals.relu import ReluDual
from onnxdual.engine.adam import Adam
from onnxdual.engine.autodual import INPUT_DUAL, dual_parts
from onnxdual.engine.build import BuiltDual
from onnxdual.engine.input_sets import InputSet



@dataclass
class Warm:
    """Per-domain optimiser state inherited by children: slopes and multipliers, ``(N, m, n)`` per layer
    (stored in bfloat16: only a starting point, never part of a proof)."""

    alpha: dict[str, Tensor]
    beta: dict[str, Tensor]

    def take(self, index: Tensor) -> Warm:
        return Warm({k: v[index] for k, v in self.alpha.items()}, {k: v[index] for k, v in self.beta.items()})

    @staticmethod
    def cat(parts: list[Warm]) -> Warm:
        # multipliers exist only for layers with a split somewhere in a part: zeros (no multiplier) elsewhere
        names = list(dict.fromkeys(k for p in parts for k in p.beta))
        beta = {}
        for k in names:
            like = next(p.beta[k] for p in parts if k in p.beta)
            beta[k] = torch.cat([p.beta[k] if k in p.beta else
                                 like.new_zeros((p.alpha[k].shape[0], *like.shape[1:])) for p in parts])
        return Warm({k: torch.cat([p.alpha[k] for p in parts]) for k in parts[0].alpha}, beta)

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for d in (self.alpha, self.beta) for v in d.values())


class FixedBounder:
    """Objective bounds of domains whose intermediate bounds are given (see the module docstring).

    ``layers`` maps ReLU node names to their per-example input shapes; :attr:`usable` is False when the
    network has other activations (their relaxations would need bounds this class does not keep)."""

    def __init__(self, built: BuiltDual, layers: dict[str, torch.Size], lr_alpha: float = 0.1,
                 lr_beta: float = 0.05):
        self.built, self.layers = built, layers
        acts = {s.node.name: s for s in built.steps if isinstance(s.layer, ActivationDual)}
        self.usable = set(acts) == set(layers)
        self.acts = acts
        self.values = {name: s.variable_inputs[0] for name, s in acts.items()}
        self.lr_alpha, self.lr_beta = lr_alpha, lr_beta

    def _faces(self, lo: dict[str, Tensor], hi: dict[str, Tensor]) -> dict:
        n = next(iter(lo.values())).shape[0]
        return {name: self.acts[name].layer.faces(lo[name].reshape(n, *shape), hi[name].reshape(n, *shape))
                for name, shape in self.layers.items()}

    def bound(self, input_set: InputSet, c: Tensor, lo: dict[str, Tensor], hi: dict[str, Tensor],
              phase: dict[str, Tensor], warm: Warm | None, want: Tensor, steps: int,
              stop: Callable[[], bool], proven: Callable[[Tensor], Tensor] | None = None,
              ) -> tuple[Tensor, Warm, dict[str, Tensor]]:
        """Best lower bound ``(N, m)`` (float64, CPU) of ``c`` ``(N, m, *out_shape)`` on each domain, the
        final slopes and multipliers, and the dual variables ``nu`` ``(N, m, n)`` at every ReLU's output
        (for branching) and at the input (``INPUT_DUAL``, for attacks). ``lo``/``hi``: flat ``(N, n)`` pre-activation bounds with the splits applied;
        ``phase``: ``(N, n)`` int8 decisions; ``want``: ``(N, m)`` the rows whose bound matters.
        ``proven(best)`` ``(N,)`` marks domains that need no more steps (they keep their parameters, so a
        batch bounds exactly as its domains would one by one)."""
        n, m = c.shape[:2]
        dev, dtype = c.device, c.dtype
        faces = self._faces(lo, hi)
        alpha, beta, sign = {}, {}, {}
        for name, shape in self.layers.items():
            if warm is not None and name in warm.alpha:
                a = warm.alpha[name].to(dev, dtype)
            else:
                a = faces[name].initial()[0].reshape(n, 1, -1).expand(n, m, -1)
            alpha[name] = faces[name].project((a.reshape(n, m, *shape),))[0].reshape(n, m, -1).clone()
            s = -phase[name].to(dev, dtype)  # -beta x_j on x_j >= 0, +beta x_j on x_j <= 0
            if bool((s != 0).any()):
                sign[name] = s.unsqueeze(1)
                b = warm.beta[name].to(dev, dtype) if warm is not None and name in warm.beta else None
                beta[name] = (torch.zeros((n, m, s.shape[1]), dtype=dtype, device=dev) if b is None
                              else b.clamp(min=0) * (s != 0).unsqueeze(1))
        want_dev = want.to(dev)
        offsets: dict[str, Tensor] = {}

        # a ReLU's lower face a x is below relu(x) everywhere for every a in [0, 1] (no offset), and its upper
        # face (the chord) does not depend on a: built once, not per row and step
        upper = {name: faces[name].faces(faces[name].initial()).upper for name in self.layers}
        zero = {name: torch.zeros((n, *shape), dtype=dtype, device=dev) for name, shape in self.layers.items()}

        def relaxation(name: str, shape: torch.Size):
            a = alpha[name].reshape(n, m, *shape)
            if isinstance(self.acts[name].layer, ReluDual):
                return Faces(ElementwiseFace(a.clamp(0.0, 1.0), zero[name]), upper[name])
            return faces[name].faces((a,))

        def evaluate(record: dict | None) -> Tensor:
            rel = {name: relaxation(name, shape) for name, shape in self.layers.items()}
            inner = {self.values[name]: (sign[name] * beta[name]).reshape(n, m, *self.layers[name])
                     for name in beta}
            linear, spread = dual_parts(self.built, input_set, rel, c, offsets=offsets, record=record,
                                        inner=inner)
            return linear - spread

        record: dict[str, Tensor] = {}
        with torch.no_grad():  # the warm start's own bound; caches every offset without a graph
            value = evaluate(record)
        best = value.double().cpu()
        nus = {k: v.detach() for k, v in record.items() if k in self.layers or k == INPUT_DUAL}
        leaves = list(alpha.values()) + list(beta.values())
        optimisers = [Adam(alpha.values(), self.lr_alpha), Adam(beta.values(), self.lr_beta)]
        active = torch.ones(n, dtype=torch.bool)
        for _ in range(steps):
            if proven is not None:  # a proven domain keeps its parameters: it bounds as it would alone
                active = active & ~proven(best)
            if stop() or not bool(active.any()):
                break
            act = active.to(dev, dtype).reshape(n, 1, 1)
            for t in leaves:
                t.requires_grad_(True)
            record = {}
            with torch.enable_grad():
                value = evaluate(record)
                loss = -value.masked_fill(~(want_dev & torch.isfinite(value)), 0.0).sum()
                grads = torch.autograd.grad(loss, leaves)
            with torch.no_grad():
                best = torch.maximum(best, value.detach().double().cpu())
                nus = {k: v.detach() for k, v in record.items() if k in self.layers or k == INPUT_DUAL}
                for t, g in zip(leaves, grads):
                    t.requires_grad_(False)
                    t.grad = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)  # of the loss -value
                for optimiser in optimisers:
                    optimiser.step(mask=act)
                for t in leaves:
                    t.grad = None
                for name, shape in self.layers.items():
                    alpha[name].copy_(faces[name].project((alpha[name].reshape(n, m, *shape),))[0]
                                      .reshape(n, m, -1))
                for name in beta:
                    beta[name].clamp_(min=0).mul_(sign[name] != 0)
        warm_out = Warm({k: v.detach().to(torch.bfloat16) for k, v in alpha.items()},
                        {k: v.detach().to(torch.bfloat16) for k, v in beta.items()})
        return best, warm_out, {k: v.reshape(n, m, -1) for k, v in nus.items()}


def intercept_scores(lo: dict[str, Tensor], hi: dict[str, Tensor], phase: dict[str, Tensor],
                     nu: dict[str, Tensor]) -> dict[str, Tensor]:
    """BaBSR's intercept score per unit ``(N, n)`` (float64): what the unit's upper face costs the bound of
    the row that ``nu`` ``(N, n)`` belongs to; ``-1`` where the unit is decided or stable."""
    out = {}
    for name in lo:
        l, u = lo[name].double(), hi[name].double()
        unstable = (l < 0) & (u > 0) & (phase[name] == 0)
        gap = torch.where(unstable, -l * u / (u - l).clamp(min=1e-30), torch.zeros_like(l))
        v = nu[name].double()
        score = gap * (v.neg().clamp(min=0) + 1e-3 * v.abs()) + 1e-9 * gap
        out[name] = score.masked_fill(~unstable, -1.0)
    return out


def top_candidates(scores: dict[str, Tensor], k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best units of each domain over all layers: layer index ``(N, k)``, unit ``(N, k)`` and
    score ``(N, k)`` (``-1``: no candidate). Layers are in the order of ``scores``."""
    flat = torch.cat(list(scores.values()), 1)
    sizes = torch.tensor([0] + [v.shape[1] for v in scores.values()])
    starts = sizes.cumsum(0)[:-1]
    k = min(k, flat.shape[1])
    value, where = flat.topk(k, dim=1)
    layer = torch.bucketize(where, starts[1:], right=True)
    return layer, where - starts[layer], value


def with_split(lo: dict[str, Tensor], hi: dict[str, Tensor], phase: dict[str, Tensor], names: list[str],
               layer: Tensor, unit: Tensor, side: int) -> tuple[dict, dict, dict]:
    """Copies of the domains' bounds and phases with unit ``unit[i]`` of layer ``names[layer[i]]`` decided
    (``side`` ``1``: ``x_j >= 0``, lower bound clamped to 0; ``-1``: ``x_j <= 0``, upper bound to 0)."""
    lo2, hi2, ph2 = {}, {}, {}
    for li, name in enumerate(names):
        rows = (layer == li).nonzero().squeeze(1)
        lo2[name], hi2[name], ph2[name] = lo[name].clone(), hi[name].clone(), phase[name].clone()
        if rows.numel():
            cols = unit[rows]
            ph2[name][rows, cols] = side
            if side > 0:
                lo2[name][rows, cols] = torch.clamp(lo2[name][rows, cols], min=0.0)
            else:
                hi2[name][rows, cols] = torch.clamp(hi2[name][rows, cols], max=0.0)
    return lo2, hi2, ph2


def domain_bytes(layers: dict[str, torch.Size], rows: int) -> int:
    """Bytes one queued domain keeps: bounds (float32), phases (int8), slopes and multipliers (bfloat16)."""
    units = sum(math.prod(s) for s in layers.values())
    return units * (2 * 4 + 1 + 2 * 2 * rows)


__all__ = ["FixedBounder", "Warm", "domain_bytes", "intercept_scores", "top_candidates", "with_split"]
