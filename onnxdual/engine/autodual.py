"""AutoDual (Alg. 3, App. F) and the dual objective J (Theorem 1, eq. 7).

**Forward pass.** Every dual layer is linear, so the dual network's action on a whole matrix of inputs can
be pushed *forward* through the network layer by layer (App. F). For each node we keep

* ``center`` -- the linearised network evaluated at the centre of the input set (the bias terms of eq. 7);
* ``terms[s]`` -- for every *source* ``s``, the images of that source's columns: ``(Bt, K, *shape)``.

A source is the input set (columns: the identity over perturbed coordinates, weighted by the radius -- the
``eps ||nu_1||`` term) or one activation layer (columns: the identity over its non-exact units, weighted by
the half-width of its relaxation -- the ``sum l [nu]_+`` term of eq. 10). The bound of any unit is then
``center -/+ sum_s ||terms[s]||_s`` with the source's dual norm. ``Bt`` is 1 while a term is the same for
every example (before the first activation), so the input identity is pushed through the first layers once.

With ``proj = r`` (Alg. 1, Theorem 2) the columns are replaced by ``r`` random Cauchy (l1) or normal (l2)
vectors, so the cost no longer depends on the number of hidden units; norms are then *estimated* with the
median estimator (eq. 12-13) or the root mean square.

**Objective.** ``J`` for a batch of specifications ``C`` is computed by the dual network itself, backwards:
``nu_k = -c`` (here ``+C`` with the signs folded in) through every layer's transpose (eq. 8), adding each
layer's objective term. Given the intermediate relaxations this is exact, also when those came from
projections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, AffineDual, Relaxation
from onnxdual.engine.build import BuiltDual
from onnxdual.engine.input_sets import Box, InputSet, L2Ball


@dataclass(frozen=True)
class Source:
    """Columns entering the dual network at one place (the input, or one activation layer)."""

    origin: str
    norm: str  # "l1" (box / relaxation gaps) or "l2" (l2 ball)
    weight: Tensor | None  # (B, K) non-negative column weights; None when folded into projected columns
    projected: bool


@dataclass
class _State:
    center: Tensor
    terms: dict[int, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class PassResult:
    """Output of one AutoDual pass: each activation's relaxation and the pre-activation bounds behind it."""

    relaxations: dict[str, Relaxation]
    preactivation_bounds: dict[str, tuple[Tensor, Tensor]]
    projected: bool


def _input_source(input_set: InputSet, proj: int | None, generator: torch.Generator | None,
                  ) -> tuple[Source, Tensor]:
    center = input_set.center
    batch, shape = center.shape[0], center.shape[1:]
    n = center[0].numel()
    if isinstance(input_set, Box):
        radius = input_set.radius.flatten(1)
        if proj is not None:
            cols = _cauchy((batch, proj, n), center, generator) * radius.unsqueeze(1)
            return Source("input", "l1", None, True), cols.reshape(batch, proj, *shape)
        active = (radius > 0).any(0).nonzero().squeeze(1)  # coordinates fixed by the box need no column
        return Source("input", "l1", radius[:, active], False), _one_hot(active, n, shape, center)
    if isinstance(input_set, L2Ball):
        eps = torch.as_tensor(input_set.eps, dtype=center.dtype, device=center.device).reshape(-1, 1)
        if proj is not None:
            cols = torch.randn((batch, proj, n), generator=generator, device=center.device, dtype=center.dtype)
            return Source("input", "l2", None, True), (cols * eps.unsqueeze(-1)).reshape(batch, proj, *shape)
        return (Source("input", "l2", eps.expand(batch, n), False),
                _one_hot(torch.arange(n, device=center.device), n, shape, center))
    raise TypeError(f"unsupported input set {type(input_set).__name__}")


def _one_hot(index: Tensor, n: int, shape: torch.Size, like: Tensor) -> Tensor:
    cols = torch.zeros((1, index.numel(), n), dtype=like.dtype, device=like.device)
    cols[0, torch.arange(index.numel(), device=like.device), index] = 1
    return cols.reshape(1, index.numel(), *shape)


def _cauchy(size: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.empty(size, dtype=like.dtype, device=like.device).cauchy_(generator=generator)


def _radius(state: _State, sources: list[Source]) -> Tensor:
    """Sum over sources of the dual norm of each unit's coefficients: ``(B, n_units)``."""
    total = None
    for sid, terms in state.terms.items():
        src = sources[sid]
        flat = terms.flatten(2)  # (Bt, K, n)
        if src.projected:
            r = flat.abs().median(dim=1).values if src.norm == "l1" else flat.pow(2).mean(dim=1).sqrt()
        elif src.norm == "l1":
            r = (src.weight.unsqueeze(1) @ flat.abs()).squeeze(1)
        else:
            r = (src.weight.pow(2).unsqueeze(1) @ flat.pow(2)).squeeze(1).sqrt()
        total = r if total is None else total + r
    if total is None:
        return torch.zeros_like(state.center.flatten(1))
    return total.expand(state.center.shape[0], -1)


def state_bounds(state: _State, sources: list[Source]) -> tuple[Tensor, Tensor]:
    radius = _radius(state, sources).reshape(state.center.shape)
    return state.center - radius, state.center + radius


def _apply_affine(layer: AffineDual, inputs: list[_State]) -> _State:
    out = _State(layer.forward(*[s.center for s in inputs]))
    source_ids = sorted({sid for s in inputs for sid in s.terms})
    for sid in source_ids:
        parts = [s.terms.get(sid) for s in inputs]
        present = [t for t in parts if t is not None]
        bt = max(t.shape[0] for t in present)
        k = present[0].shape[1]
        flat = [None if t is None else t.expand(bt, *t.shape[1:]).reshape(bt * k, *t.shape[2:]) for t in parts]
        image = layer.linear(*flat)
        out.terms[sid] = image.reshape(bt, k, *image.shape[1:])
    return out


def forward_pass(built: BuiltDual, input_set: InputSet, proj: int | None = None,
                 generator: torch.Generator | None = None) -> PassResult:
    """Compute every activation's pre-activation bounds and relaxation in one pass (Alg. 3 / Alg. 1)."""
    sources: list[Source] = []
    relaxations: dict[str, Relaxation] = {}
    bounds: dict[str, tuple[Tensor, Tensor]] = {}
    last = built.last_activation
    if last < 0:
        return PassResult(relaxations, bounds, proj is not None)
    src, cols = _input_source(input_set, proj, generator)
    sources.append(src)
    states = {built.graph.input_name: _State(input_set.center, {0: cols})}
    remaining = built.consumers()
    for step in built.steps[: last + 1]:
        inputs = [states[name] for name in step.variable_inputs]
        if isinstance(step.layer, ActivationDual):
            (state,) = inputs
            lower, upper = state_bounds(state, sources)
            bounds[step.node.name] = (lower, upper)
            relax = step.layer.relax(lower, upper)
            relaxations[step.node.name] = relax
            out = _State(relax.slope * state.center + relax.mid)
            slope = relax.slope.unsqueeze(1)
            out.terms = {sid: slope * t for sid, t in state.terms.items()}
            half = relax.half_width
            if (half > 0).any():
                flat = half.flatten(1)
                if proj is not None:
                    cols = _cauchy((flat.shape[0], proj, flat.shape[1]), flat, generator) * flat.unsqueeze(1)
                    sources.append(Source(step.node.name, "l1", None, True))
                    out.terms[len(sources) - 1] = cols.reshape(flat.shape[0], proj, *half.shape[1:])
                else:
                    active = (flat > 0).any(0).nonzero().squeeze(1)
                    sources.append(Source(step.node.name, "l1", flat[:, active], False))
                    out.terms[len(sources) - 1] = _one_hot(active, flat.shape[1], half.shape[1:], flat)
        else:
            out = _apply_affine(step.layer, inputs)
        states[step.node.name] = out
        for name in step.variable_inputs:
            remaining[name] -= 1
            if remaining[name] == 0:
                del states[name]
    return PassResult(relaxations, bounds, proj is not None)


def objective(built: BuiltDual, input_set: InputSet, relaxations: dict[str, Relaxation], c: Tensor) -> Tensor:
    """Lower bound of ``c . f(x')`` over the input set for ``c`` of shape ``(B, m, *out_shape)``: the dual
    objective ``J`` of eq. 7 evaluated at ``nu = g(c)`` (eq. 8). Returns ``(B, m)``."""
    batch, m = c.shape[:2]
    nus: dict[str, Tensor] = {built.graph.output_name: c}
    total = torch.zeros((batch, m), dtype=c.dtype, device=c.device)

    def push(name: str, value: Tensor) -> None:
        nus[name] = value if name not in nus else nus[name] + value

    for step in reversed(built.steps):
        nu = nus.pop(step.node.name, None)
        if nu is None:
            continue
        layer = step.layer
        if isinstance(layer, ActivationDual):
            relax = relaxations[step.node.name]
            flat = nu.flatten(2)
            total = total + (flat * relax.mid.flatten(1).unsqueeze(1)).sum(-1) \
                - (flat.abs() * relax.half_width.flatten(1).unsqueeze(1)).sum(-1)
            push(step.variable_inputs[0], nu * relax.slope.unsqueeze(1))
        else:
            offset = layer.offset()
            total = total + (nu.flatten(2) * offset.flatten(1).unsqueeze(1)).sum(-1)
            grads = layer.transpose(nu.reshape(batch * m, *nu.shape[2:]))
            for name, g in zip(step.variable_inputs, grads):
                push(name, g.reshape(batch, m, *g.shape[1:]))
    nu_in = nus.pop(built.graph.input_name, None)
    if nu_in is not None:
        total = total + input_set.dual_term(nu_in)
    return total
