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
median estimator (eq. 12-13) or the root mean square. The columns of all sources travel stacked in one
tensor, one call per layer (:mod:`onnxdual.engine.projected`).

**Objective.** ``J`` for a batch of specifications ``C`` is computed by the dual network itself, backwards:
``nu_k = -c`` (here ``+C`` with the signs folded in) through every layer's transpose (eq. 8), adding each
layer's objective term. Given the intermediate relaxations this is exact, also when those came from
projections.

**Separate faces** (``relaxation="adaptive"``). With a lower and an upper face per activation
(:class:`~onnxdual.duals.base.Faces`) the dual is no longer linear in ``nu`` (each row picks a face by the sign
of its coefficient), so forward columns and the ``J(-c) = -linear - spread`` shortcut no longer apply: after
the first activation every bound is computed backwards, on the rows ``+e_j`` and ``-e_j`` separately (CROWN),
and intersected with interval bounds (:mod:`onnxdual.engine.interval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, AffineDual, Faces, LinearRelaxation, ParametricFaces
from onnxdual.engine import cost, patches, projected
from onnxdual.engine.build import BuiltDual
from onnxdual.engine.input_sets import Box, InputSet, L2Ball
from onnxdual.engine.interval import IntervalPass
from onnxdual.engine.rowdots import row_dot, row_terms
from onnxdual.engine.tail_bounds import TailBound

#: the relaxations a pass can use: the paper's same-slope parallelogram, or separate faces with the dual
#: layers' adaptive choice (CROWN); "optimized" is "adaptive" plus :mod:`onnxdual.engine.optimize`
RELAXATIONS = ("paper", "adaptive", "optimized")

#: an activation's relaxation in a pass: the paper's (linear in nu) or separate faces
AnyRelaxation = LinearRelaxation | Faces


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
    #: projected passes: the columns of all sources are stacked in ``terms[0]``, block ``i`` holding source
    #: ``blocks[i]`` (:mod:`onnxdual.engine.projected`)
    blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class PassResult:
    """Output of one AutoDual pass: each activation's relaxation and the pre-activation bounds behind it.

    ``empty``: per example, whether its split limits leave no input at all (``None``: no splits).
    ``limits``: with separate faces, the constant limits every bound of an activation's input is
    intersected with (interval bounds and split limits), for passes that recompute those bounds."""

    relaxations: dict[str, AnyRelaxation]
    preactivation_bounds: dict[str, tuple[Tensor, Tensor]]
    projected: bool
    empty: Tensor | None = None
    limits: dict[str, tuple[Tensor, Tensor]] | None = None


#: per activation node, per-example ``(lower, upper)`` limits of its input (branch and bound)
Splits = dict[str, tuple[Tensor, Tensor]]


def apply_splits(lower: Tensor, upper: Tensor, limits: tuple[Tensor, Tensor] | None,
                 empty: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Intersect pre-activation bounds with split limits. The bounds then hold for the inputs whose
    pre-activations lie within the limits (the subdomain of a branch), and so does every relaxation built
    on them: the relaxed problem still contains every true point of the subdomain, so its dual bound is a
    bound there (Theorem 1). Examples whose interval becomes empty are marked in ``empty`` (their subdomain
    has no input) and get a degenerate interval, so that the rest of the pass stays finite."""
    if limits is None:
        return lower, upper, empty
    lo_limit, hi_limit = (v.to(lower.device, lower.dtype) for v in limits)
    lower, upper = torch.maximum(lower, lo_limit), torch.minimum(upper, hi_limit)
    crossed = lower > upper
    hit = crossed.flatten(1).any(1)
    empty = hit if empty is None else empty | hit
    upper = torch.where(crossed, lower, upper)
    return lower, upper, empty


def _input_source(input_set: InputSet, proj: int | None, generator: torch.Generator | None,
                  ) -> tuple[Source, Tensor]:
    center = input_set.center
    batch, shape = center.shape[0], center.shape[1:]
    n = center[0].numel()
    if isinstance(input_set, Box):
        radius = input_set.radius.flatten(1)
        if proj is not None:
            if bool((radius == radius[:1]).all()):  # one radius for the batch: its columns are shared
                radius = radius[:1]
            cols = projected.cauchy((batch, proj, n), center, generator) * radius.unsqueeze(1)
            return Source("input", "l1", None, True), cols.reshape(cols.shape[0], proj, *shape)
        active = (radius > 0).any(0).nonzero().squeeze(1)  # coordinates fixed by the box need no column
        return Source("input", "l1", radius[:, active], False), _one_hot(active, n, shape, center)
    if isinstance(input_set, L2Ball):
        eps = torch.as_tensor(input_set.eps, dtype=center.dtype, device=center.device).reshape(-1, 1)
        if proj is not None:
            cols = torch.randn((1, proj, n), generator=generator, dtype=center.dtype,
                               device=generator.device if generator is not None else center.device)
            cols = cols.to(center.device)
            cols = cols * eps.unsqueeze(-1)
            return Source("input", "l2", None, True), cols.reshape(cols.shape[0], proj, *shape)
        return (Source("input", "l2", eps.expand(batch, n), False),
                _one_hot(torch.arange(n, device=center.device), n, shape, center))
    raise TypeError(f"unsupported input set {type(input_set).__name__}")


def _one_hot(index: Tensor, n: int, shape: torch.Size, like: Tensor) -> Tensor:
    cols = torch.zeros((1, index.numel(), n), dtype=like.dtype, device=like.device)
    cols[0, torch.arange(index.numel(), device=like.device), index] = 1
    return cols.reshape(1, index.numel(), *shape)


def _radius(state: _State, sources: list[Source], tail: TailBound | None = None) -> Tensor:
    """Sum over sources of the dual norm of each unit's coefficients: ``(B, n_units)``. Projected sources
    give the median / root-mean-square estimate, or with ``tail`` a high-probability upper bound."""
    if state.blocks:
        flat = state.terms[0].flatten(2)
        total = projected.block_norms(flat, [sources[s].norm for s in state.blocks],
                                      flat.shape[1] // len(state.blocks), tail)
        return total.expand(state.center.shape[0], -1)
    total = None
    for sid, terms in state.terms.items():
        src = sources[sid]
        flat = terms.flatten(2)  # (Bt, K, n)
        if src.norm == "l1":
            r = (src.weight.unsqueeze(1) @ flat.abs()).squeeze(1)
        else:
            r = (src.weight.pow(2).unsqueeze(1) @ flat.pow(2)).squeeze(1).sqrt()
        total = r if total is None else total + r
    if total is None:
        return torch.zeros_like(state.center.flatten(1))
    return total.expand(state.center.shape[0], -1)


def state_bounds(state: _State, sources: list[Source], tail: TailBound | None = None,
                 ) -> tuple[Tensor, Tensor]:
    radius = _radius(state, sources, tail).reshape(state.center.shape)
    return state.center - radius, state.center + radius


def _apply_affine(layer: AffineDual, inputs: list[_State]) -> _State:
    out = _State(layer.forward(*[s.center for s in inputs]))
    if any(s.blocks for s in inputs):  # projected: every source's columns in one call
        union = tuple(sorted({sid for s in inputs for sid in s.blocks}))
        parts = projected.stack([s.terms.get(0) for s in inputs], [s.blocks for s in inputs], union,
                                next(s.terms[0].shape[1] // len(s.blocks) for s in inputs if s.blocks))
        present = next(t for t in parts if t is not None)
        bt, k = present.shape[:2]
        image = layer.linear(*[None if t is None else projected.batched(t) for t in parts])
        out.terms[0] = image.reshape(bt, k, *image.shape[1:])
        out.blocks = union
        return out
    source_ids = sorted({sid for s in inputs for sid in s.terms})
    for sid in source_ids:
        parts = [s.terms.get(sid) for s in inputs]
        present = [t for t in parts if t is not None]
        bt = max(t.shape[0] for t in present)
        k = present[0].shape[1]
        flat = [None if t is None else t.expand(bt, *t.shape[1:]).reshape(bt * k, *t.shape[2:])
                for t in parts]
        image = layer.linear(*flat)
        out.terms[sid] = image.reshape(bt, k, *image.shape[1:])
    return out


def backward_rows(built: BuiltDual, input_set: InputSet, memory_budget: int) -> int:
    """How many backward rows (units bounded at once) fit ``memory_budget`` for this batch."""
    return cost.backward_rows(input_set.center.shape[0], built.largest_value, input_set.center.element_size(),
                              memory_budget)


def adaptive_faces(layer: ActivationDual, lower: Tensor, upper: Tensor) -> Faces:
    """The layer's faces on ``[lower, upper]``, at its adaptive parameters if it has free ones."""
    faces = layer.faces(lower, upper)
    return faces.faces(faces.initial()) if isinstance(faces, ParametricFaces) else faces


def forward_pass(built: BuiltDual, input_set: InputSet, proj: int | None = None,
                 generator: torch.Generator | None = None, memory_budget: int = 2 * 1024**3,
                 splits: Splits | None = None, fixed: dict[str, AnyRelaxation] | None = None,
                 tail: TailBound | None = None, stop_at: str | None = None,
                 relaxation: str = "paper", stop: Callable[[], bool] | None = None) -> PassResult:
    """Compute every activation's pre-activation bounds and relaxation in one layer-by-layer pass.

    With ``proj`` every bound is estimated in the forward direction (Alg. 1). Exact bounds start forward
    (Alg. 3: the input identity is shared by the batch and cheap to push through the first layers) and
    switch to the backward direction (Theorem 1 with ``c = +/- e_j``) at the first activation with fewer
    units than forward columns; from there on each activation's bounds cost one backward pass over its own
    units, in chunks that fit ``memory_budget``. Both directions compute the same dual bound.

    ``splits`` limits activation inputs per example (see :func:`apply_splits`). For App. E
    (:mod:`onnxdual.engine.probable`): ``fixed`` relaxations are used as given instead of being computed,
    ``tail`` turns projected norms into high-probability upper bounds, and the pass stops once it has the
    bounds of activation ``stop_at``.

    ``relaxation="adaptive"`` (exact bounds only) gives every activation separate faces at the dual
    layer's adaptive choice; bounds after the first activation are then computed backwards on ``+/- e_j``
    and intersected with interval bounds. ``"paper"`` is the paper's pass, unchanged. ``stop`` (a deadline):
    asked before every step and chunk of backward rows; ``True`` raises ``DeadlineExceeded``."""
    if relaxation not in ("paper", "adaptive"):
        raise ValueError(f"a pass uses the 'paper' or the 'adaptive' relaxation, not {relaxation!r}")
    faces = relaxation == "adaptive"
    if faces and (proj is not None or tail is not None):
        raise ValueError("separate faces need exact bounds (random projections need the paper's relaxation)")
    splits, fixed = splits or {}, fixed or {}
    empty: Tensor | None = None
    sources: list[Source] = []
    relaxations: dict[str, LinearRelaxation] = {}
    bounds: dict[str, tuple[Tensor, Tensor]] = {}
    last = built.last_activation
    if last < 0:
        return PassResult(relaxations, bounds, proj is not None)
    src, cols = _input_source(input_set, proj, generator)
    sources.append(src)
    states = {built.graph.input_name: _State(input_set.center, {0: cols}, (0,) if src.projected else ())}
    remaining = built.consumers()
    backward = False
    offsets: dict[str, Tensor] = {}
    batch = input_set.center.shape[0]
    max_rows = backward_rows(built, input_set, memory_budget)
    next_units = cost.units_ahead(built)
    if proj is None and not faces:
        next_units = _patch_units(built, input_set, next_units)
    intervals = IntervalPass(built, input_set) if faces else None
    limits: dict[str, tuple[Tensor, Tensor]] = {}
    for i, step in enumerate(built.steps[: last + 1]):
        cost.check_stop(stop)
        if faces and relaxations and not backward:  # faces are not linear in nu: no forward columns
            backward = True
            states.clear()
        inputs = [] if backward else [states[name] for name in step.variable_inputs]
        if proj is None and not backward and any(_turn_backward(next_units[i], s, batch) for s in inputs):
            backward = True
            states.clear()
        if isinstance(step.layer, ActivationDual):
            relax = fixed.get(step.node.name)
            if relax is None:
                name, shape = step.variable_inputs[0], step.input_shapes[0]
                if intervals is not None:
                    limits[step.node.name] = intervals.limits(step, input_set.center.new_empty((batch, *shape)),
                                                              splits.get(step.node.name))
                if backward and intervals is not None:
                    # units whose relaxation is exact on their interval (and split limits) need no rows:
                    # a tighter bound would not change their faces
                    lower, upper = limits[step.node.name]
                    units = step.layer.needs_bounds(lower, upper).flatten(1).any(0).nonzero().squeeze(1)
                    lower, upper = backward_bounds(built, input_set, relaxations, name, shape, max_rows,
                                                   offsets, two_sided=True, units=units, outside=(lower, upper),
                                                   stop=stop)
                elif backward:
                    lower, upper = backward_bounds(built, input_set, relaxations, name, shape, max_rows,
                                                   offsets, stop=stop)
                else:
                    lower, upper = state_bounds(inputs[0], sources, tail)
                if intervals is not None:
                    lower, upper = intervals.tighten(step, lower, upper)
                lower, upper, empty = apply_splits(lower, upper, splits.get(step.node.name), empty)
                bounds[step.node.name] = (lower, upper)
                if step.node.name == stop_at:
                    break
                relax = adaptive_faces(step.layer, lower, upper) if faces else step.layer.relax(lower, upper)
                if intervals is not None:
                    intervals.activation(step, lower, upper)
            relaxations[step.node.name] = relax
            if not backward and not faces:
                states[step.node.name] = _activation_state(inputs[0], relax, proj, generator, sources,
                                                           step.node.name)
        else:
            if intervals is not None:
                intervals.affine(step)
            if not backward:
                states[step.node.name] = _apply_affine(step.layer, inputs)
        if not backward:
            for name in step.variable_inputs:
                remaining[name] -= 1
                if remaining[name] == 0:
                    del states[name]
    return PassResult(relaxations, bounds, proj is not None, empty, limits if faces else None)


def _patch_units(built: BuiltDual, input_set: InputSet, units: list[int]) -> list[float]:
    """``units`` of the next activation at each step, in dense-row equivalents: where that activation's
    input is bounded through patches (:mod:`onnxdual.engine.patches`), a row costs its window, not an image
    (the largest value of the network, what a dense row is sized by)."""
    scale: dict[str, float] = {}
    for step in built.steps[: built.last_activation + 1]:
        if isinstance(step.layer, ActivationDual):
            plan = patches.plan(built, step.variable_inputs[0], input_set)
            scale[step.node.name] = 1.0 if plan is None else plan.largest / built.largest_value
    out, factor = [], 1.0
    for i in range(len(units) - 1, -1, -1):
        step = built.steps[i]
        factor = scale.get(step.node.name, factor)
        out.append(units[i] * factor)
    return out[::-1]


def _turn_backward(units: float, state: _State, batch: int) -> bool:
    """Whether bounding ``units`` backwards is cheaper than carrying this state's forward columns on
    (:mod:`onnxdual.engine.cost`)."""
    return cost.turns_backward(units, cost.column_cost(((t.shape[0], t.shape[1]) for t in state.terms.values()),
                                                       batch))


def _activation_state(state: _State, relax: LinearRelaxation, proj: int | None,
                      generator: torch.Generator | None, sources: list[Source], origin: str) -> _State:
    """Forward images after an activation: through its relaxation's linear map, plus the relaxation gap as
    a new source."""
    out = _State(relax.apply(state.center.unsqueeze(1)).squeeze(1) + relax.mid)
    out.terms = {sid: relax.apply(t) for sid, t in state.terms.items()}
    out.blocks = state.blocks
    half = relax.half_width
    if (half > 0).any():
        flat = half.flatten(1)
        if proj is not None:  # the gap's columns join the stack (eq. 13: R scaled by the gap)
            cols = projected.cauchy((flat.shape[0], proj, flat.shape[1]), flat, generator) * flat.unsqueeze(1)
            sources.append(Source(origin, "l1", None, True))
            cols = cols.reshape(flat.shape[0], proj, *half.shape[1:])
            if out.blocks:
                old = out.terms[0]
                bt = max(old.shape[0], cols.shape[0])
                cols = torch.cat([old.expand(bt, *old.shape[1:]), cols.expand(bt, *cols.shape[1:])], 1)
            out.terms = {0: cols}
            out.blocks = (*out.blocks, len(sources) - 1)
        else:
            active = (flat > 0).any(0).nonzero().squeeze(1)
            sources.append(Source(origin, "l1", flat[:, active], False))
            out.terms[len(sources) - 1] = _one_hot(active, flat.shape[1], half.shape[1:], flat)
    return out


#: the key of the input's dual variable in a ``record`` of :func:`dual_parts`, beside the activations' node
#: names (a name that no exporter gives a node)
INPUT_DUAL = "<input>"


def dual_parts(built: BuiltDual, input_set: InputSet, relaxations: dict[str, AnyRelaxation], c: Tensor,
               start: str | None = None, offsets: dict[str, Tensor] | None = None,
               record: dict[str, Tensor] | None = None, inner: dict[str, Tensor] | None = None,
               ) -> tuple[Tensor, Tensor]:
    """The dual network run backwards from ``start`` (default: the output) on ``c`` of shape
    ``(B or 1, m, *shape)`` (eq. 8), split into the two parts of the objective (eq. 7): the terms linear in
    ``nu`` (biases, relaxation midpoints, the input centre) and the non-negative spread (``eps ||nu_1||_*``
    and the relaxations' ``|nu|`` terms). ``J(c) = linear - spread``; because every dual layer is linear,
    ``J(-c) = -linear - spread``, so one pass bounds ``c . z`` from both sides. Returns two ``(B, m)``.
    ``record`` receives the dual variable ``nu`` at every activation's output (eq. 8), by node name, and the
    one at the network's input under :data:`INPUT_DUAL` (``nu_1``: the input set's point that minimises
    ``nu_1^T x`` is where the relaxed network is lowest, a start for attacks).
    ``inner`` adds objective terms on intermediate values: ``c . z_out + sum_v inner[v] . z_v`` (by value
    name, each ``(B or 1, m, *shape_v)``); the backward pass simply starts from there too.

    Separate faces (:class:`~onnxdual.duals.base.Faces`) put their whole term into ``linear``: their
    ``J(c) = linear - spread`` is still the lower bound, but ``J(-c)`` needs its own pass."""
    start = built.graph.output_name if start is None else start
    batch = input_set.center.shape[0]
    m = c.shape[1]
    nus: dict[str, Tensor] = {start: c}
    linear = torch.zeros((batch, m), dtype=c.dtype, device=c.device)
    spread = torch.zeros((batch, m), dtype=c.dtype, device=c.device)
    offsets = {} if offsets is None else offsets

    def push(name: str, value: Tensor) -> None:
        nus[name] = value if name not in nus else nus[name] + value

    for name, value in (inner or {}).items():
        push(name, value.to(c.dtype))

    for step in reversed(built.steps):
        if not nus or (len(nus) == 1 and built.graph.input_name in nus):
            break
        nu = nus.pop(step.node.name, None)
        if nu is None:
            continue
        layer = step.layer
        flat = nu.flatten(2)
        if isinstance(layer, ActivationDual):
            relax = relaxations[step.node.name]
            if record is not None:
                record[step.node.name] = nu
            if isinstance(relax, Faces):
                nu_in, term = relax.backward(nu)
                linear = linear + term
                if not relax.constant:  # a zero map (a step): nothing below it adds to the bound
                    push(step.variable_inputs[0], nu_in)
                continue
            lin, spr = row_terms(flat, relax.mid.flatten(1), relax.half_width.flatten(1))
            linear, spread = linear + lin, spread + spr
            if not relax.constant:
                push(step.variable_inputs[0], relax.transpose(nu))
        else:
            if step.node.name not in offsets:  # a layer without parameters (a reshape) may give the default dtype
                offsets[step.node.name] = layer.offset().to(c.dtype)
            offset = offsets[step.node.name].flatten(1)
            # a layer without parameters (a reshape) adds nothing, nor its gradient's cost; a zero bias that
            # is trained still needs its gradient (robust training of a freshly initialised model)
            if offset.requires_grad or offset.any():
                linear = linear + row_dot(flat, offset)
            bt = nu.shape[0]
            grads = layer.transpose(nu.reshape(bt * m, *nu.shape[2:]))
            for name, g in zip(step.variable_inputs, grads):
                push(name, g.reshape(bt, m, *g.shape[1:]))
    nu_in = nus.pop(built.graph.input_name, None)
    if nu_in is not None:
        if record is not None:
            record[INPUT_DUAL] = nu_in
        lin, spr = input_set.dual_parts(nu_in)
        linear, spread = linear + lin, spread + spr
    return linear, spread


def objective(built: BuiltDual, input_set: InputSet, relaxations: dict[str, AnyRelaxation], c: Tensor,
              record: dict[str, Tensor] | None = None, inner: dict[str, Tensor] | None = None) -> Tensor:
    """Lower bound of ``c . f(x')`` over the input set for ``c`` of shape ``(B, m, *out_shape)``: the dual
    objective ``J`` of eq. 7 evaluated at ``nu = g(c)`` (eq. 8), plus ``inner`` terms (see
    :func:`dual_parts`). Returns ``(B, m)``."""
    linear, spread = dual_parts(built, input_set, relaxations, c, record=record, inner=inner)
    return linear - spread


def backward_bounds(built: BuiltDual, input_set: InputSet, relaxations: dict[str, AnyRelaxation],
                    name: str, shape: torch.Size, max_rows: int, offsets: dict[str, Tensor],
                    two_sided: bool = False, units: Tensor | None = None,
                    outside: tuple[Tensor, Tensor] | None = None, stop: Callable[[], bool] | None = None,
                    ) -> tuple[Tensor, Tensor]:
    """Bounds of every unit of value ``name`` by the dual network run backwards from it on identity rows
    (Theorem 1 with ``c = +/- e_j``), in chunks of at most ``max_rows`` rows. ``two_sided``: the relaxations
    have separate faces, so the rows ``-e_j`` get their own pass (half as many rows fit). ``units``: only these
    flat units get rows; the others take their bounds from ``outside``. ``stop``: as in :func:`forward_pass`."""
    center = input_set.center
    n = math.prod(shape)
    wanted = torch.arange(n, device=center.device) if units is None else units
    lows, highs = [], []
    plan = patches.plan(built, name, input_set)
    if plan is not None and not patches.supported(plan, relaxations):
        plan = None
    if plan is not None:  # windows instead of images: more rows fit, as the images are larger than windows
        max_rows = max(1, max_rows * built.largest_value // (patches.COPIES_PER_TERM * plan.largest))
    step = max(1, max_rows // 2) if two_sided else max_rows
    for rows in cost.row_chunks(wanted, step, stop):
        k = rows.numel()
        signs = torch.ones((1, k), dtype=center.dtype, device=center.device)
        if two_sided:  # the rows -e_j in the same pass, after the rows +e_j
            rows, signs = torch.cat([rows, rows]), torch.cat([signs, -signs], 1)
        if plan is not None:
            linear, spread = patches.parts(plan, built, input_set, relaxations, rows.unsqueeze(0), signs, offsets)
        else:
            eye = torch.zeros((1, rows.numel(), n), dtype=center.dtype, device=center.device)
            eye[0, torch.arange(rows.numel(), device=center.device), rows] = signs[0]
            linear, spread = dual_parts(built, input_set, relaxations, eye.reshape(1, rows.numel(), *shape),
                                        start=name, offsets=offsets)
        if two_sided:
            value = linear - spread
            lows.append(value[:, :k])
            highs.append(-value[:, k:])
        else:
            lows.append(linear - spread)
            highs.append(linear + spread)
    batch = center.shape[0]
    if units is None:
        return torch.cat(lows, 1).reshape(batch, *shape), torch.cat(highs, 1).reshape(batch, *shape)
    low, high = (v.flatten(1).expand(batch, n).clone() for v in outside)
    if lows:
        low[:, units], high[:, units] = torch.cat(lows, 1), torch.cat(highs, 1)
    return low.reshape(batch, *shape), high.reshape(batch, *shape)
