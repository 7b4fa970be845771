"""The optimised relaxation: free face parameters chosen by projected gradient ascent on the bound.

In the dual view (Wong & Kolter 2018, §3) the lower face ``a x`` of an unstable ReLU is sound for every
``a`` in ``[0, 1]``; the best choice is the LP relaxation's optimum over these dual variables (the "optimal
dual"; alpha-CROWN, Xu et al. 2021). Every activation whose faces have free parameters
(:class:`~onnxdual.duals.base.ParametricFaces`) gets one set per *target* and per target row: the objective
``C`` (one set per row of ``C``) and every later activation's input bounds (one set per unit and side).
Intermediate bounds are recomputed from their parameters at every step, so the gradient of the final bound
reaches them through the relaxations built on those bounds.

Soundness does not depend on the optimiser: the faces are sound for every parameter value and every
intermediate bound is intersected with the constant limits of the adaptive pass (interval bounds and the
branch's split limits), so *every iterate is a valid bound*. (Intermediate bounds are deliberately not
intersected with the adaptive ones while optimising: at the start the two are equal, and a maximum with a
constant would stop the gradient that lets an intermediate bound trade its own tightness for the final one.) The result is the best value seen per entry,
starting with the adaptive bound itself (iteration 0), hence never looser than "adaptive". Deterministic:
plain Adam steps on fixed data, no randomness.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from onnxdual.duals.base import ActivationDual, Faces, ParametricFaces
from onnxdual.engine import patches
from onnxdual.engine.adam import Adam
from onnxdual.engine.autodual import PassResult, dual_parts
from onnxdual.engine.build import BuiltDual
from onnxdual.engine.input_sets import InputSet
from onnxdual.engine.memo import Memo


@dataclass(frozen=True)
class OptimizeOptions:
    """How the free parameters are optimised.

    Attributes:
        iterations: gradient steps (0: the adaptive bound).
        lr: Adam step size on the parameters.
        decay: the step size's factor per iteration.
        patience: stop when the summed bound has not improved by ``tolerance`` (relative) for this many steps.
        tolerance: relative improvement that counts for ``patience``.
        intermediate: also optimise the bounds of every intermediate activation (not only the objective).
        intermediate_iterations: optimise intermediate bounds only in the first this many iterations
            (``None``: in all); later iterations keep the tightest intermediate bounds seen and move only the
            objective's parameters, which costs a small fraction of a joint iteration.
        stop_when_positive: stop as soon as every bound entry is positive (all proven; for verification).
        memory_budget: bytes the per-row parameters may take; past it, a target shares one parameter set
            across its rows (looser, far smaller).
        stop: called before every iteration; ``True`` ends the optimisation with the best bound so far
            (a deadline: every iterate is a valid bound, so stopping early is always sound).

    The defaults are measured (``benchmarks/bounds/``): with a step size that shrinks faster (0.9 per
    iteration) 7 joint iterations keep every entry of the reference models at least as tight as
    alpha-CROWN's, where 10 were needed with 0.98; the joint iterations are nearly all of the cost on
    convolutional networks. Verification's roots and domains state their own settings (``verify``).
    """

    iterations: int = 40
    lr: float = 0.5
    decay: float = 0.9
    patience: int = 8
    tolerance: float = 1e-5
    intermediate: bool = True
    intermediate_iterations: int | None = 7
    stop_when_positive: bool = False
    memory_budget: int = 512 * 1024**2
    stop: Callable[[], bool] | None = None

    def __post_init__(self):
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 0:
            raise ValueError(f"iterations must be a non-negative integer, got {self.iterations!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")


@dataclass(frozen=True)
class OptimizedBound:
    """The best bound seen per entry ``(B, m)`` and the tightest intermediate bounds seen (as a pass)."""

    value: Tensor
    result: PassResult
    iterations: int


@dataclass(frozen=True)
class _Target:
    """An activation whose input bounds are re-optimised: its unit indices (flat) and the identity rows."""

    name: str
    value: str  # the name of its input value (where the backward pass starts)
    shape: torch.Size
    index: Tensor  # (B, k) per example, the flat units whose bounds matter (n: padding, a dummy unit)
    # either the rows as windows (:mod:`onnxdual.engine.patches`): the plan, units (B, 2k) and the rows set up
    # once for every iteration (signs (B, 2k), padded rows with sign 0 at unit 0); or dense rows
    # (B, 2k, *shape): +e_j then -e_j (zero for padding)
    plan: patches.Plan | None
    units: Tensor | None
    windowed: patches.Rows | None
    rows: Tensor | None


def optimized_bound(built: BuiltDual, input_set: InputSet, base: PassResult, c: Tensor,
                    options: OptimizeOptions = OptimizeOptions(), inner: dict[str, Tensor] | None = None,
                    ) -> OptimizedBound:
    """Lower bound of ``c . f(x')`` (``c``: ``(B, m, *out_shape)``) with optimised faces, warm-started from
    ``base``, the adaptive pass of the same input set (and splits). ``inner`` as in
    :func:`~onnxdual.engine.autodual.dual_parts`."""
    steps = [s for s in built.steps if isinstance(s.layer, ActivationDual) and s.node.name in base.relaxations]
    # the parameters are the only variables here: the network's weights (trainable tensors) are constants
    bounds = {name: (lo.detach(), hi.detach()) for name, (lo, hi) in base.preactivation_bounds.items()}
    limits = {name: (lo.detach(), hi.detach()) for name, (lo, hi) in (base.limits or {}).items()}
    empty = base.empty
    c_const = c.detach()
    inner_const = {k: v.detach() for k, v in (inner or {}).items()}
    # the weights are constants here (only the face parameters move): without their gradients nothing
    # records a graph into them, and the rows' constant parts are computed once
    with _as_constants(built.weights()):
        best, best_bounds, params, offsets, done = _ascend(built, input_set, base, steps, bounds, limits, c_const,
                                                           inner_const, options)
    if c.requires_grad or any(v.requires_grad for v in (inner or {}).values()):
        # keep the bound differentiable in its objective (e.g. a caller's ascent on row weights): the
        # envelope of the best parameters, evaluated once more with the caller's tensors
        relax = base.relaxations if not params else {
            s.node.name: _faces(s, best_bounds[s.node.name], _detached(params.get(("", s.node.name))))
            for s in steps}
        final = _value(built, input_set, relax, c, inner or {}, offsets)
        best = torch.where(final >= best, final, best)
    if empty is not None:
        best = best.masked_fill(empty.unsqueeze(1), math.inf)
    relaxations = {s.node.name: _faces(s, best_bounds[s.node.name], None) for s in steps}
    result = PassResult(relaxations, best_bounds, False, empty)
    return OptimizedBound(best, result, done)


def _ascend(built: BuiltDual, input_set: InputSet, base: PassResult, steps, bounds, limits, c: Tensor,
            inner: dict[str, Tensor], options: OptimizeOptions):
    """The projected gradient ascent of :func:`optimized_bound` on constant ``c`` and ``inner``: the best
    value per entry, the tightest intermediate bounds seen, the parameters, the offsets and the iterations."""
    offsets: dict[str, Tensor] = {}
    with torch.no_grad():  # also caches every offset without a graph
        best = _value(built, input_set, base.relaxations, c, inner, offsets)
    batch = best.shape[0]
    targets = (_targets(built, input_set, base.relaxations, steps, bounds, c.device, c.dtype, offsets)
               if options.intermediate else [])
    target_names = {t.name for t in targets}
    # parameters: one set per (target, earlier activation) with free parameters
    params: dict[tuple[str, str], tuple[Tensor, ...]] = {}
    row_counts = {t.name: 2 * t.index.shape[1] for t in targets} | {"": c.shape[1]}
    windows = _windows(targets, steps, bounds, batch) if WINDOWED_PARAMETERS else {}
    per_row = _per_row_fits(steps, row_counts, bounds, batch, c.element_size(), options.memory_budget,
                            {key: math.prod(w.shape[2:]) for key, w in windows.items()})
    windows = {key: w for key, w in windows.items() if per_row[key[0]]}  # shared sets stay whole images
    order = [s.node.name for s in steps]
    by_name = {s.node.name: s for s in steps}
    for target in [*(t.name for t in targets), ""]:
        earlier = order if target == "" else order[: order.index(target)]
        for name in earlier:
            step = by_name[name]
            lower, upper = bounds[name]
            if (target, name) in windows:  # one set per row, in its window's coordinates
                params[(target, name)] = tuple(t.detach().clone().requires_grad_(True)
                                               for t in windows[(target, name)].initial)
                continue
            faces = step.layer.faces(lower, upper)
            if isinstance(faces, ParametricFaces):
                k = row_counts[target] if per_row[target] else 1
                params[(target, name)] = tuple(
                    t.detach().unsqueeze(1).expand(batch, k, *t.shape[1:]).clone().requires_grad_(True)
                    for t in faces.initial())
    best_bounds = {name: (lo.clone(), hi.clone()) for name, (lo, hi) in bounds.items()}
    done = 0
    if params and options.iterations > 0:
        # one optimiser per target (Adam is element-wise, so this is the same as one for all): once the
        # intermediate targets stop, their parameters stop costing steps and projections
        optimisers = {}
        for target in {t for t, _ in params}:
            group_of = [p for (t, _), group in params.items() if t == target for p in group]
            optimisers[target] = Adam(group_of, options.lr, options.decay)
        history: list[float] = []
        built_faces = _BuiltFaces()
        frame = bounds  # the bounds that intermediate targets start from and that shape the projection
        for it in range(options.iterations):
            if options.stop is not None and options.stop():
                break
            done += 1
            if targets and it == options.intermediate_iterations:  # from here on: the objective only
                targets, target_names, frame = [], set(), best_bounds
                optimisers = {t: o for t, o in optimisers.items() if t == ""}
            with torch.enable_grad():
                current = _bounds(built, input_set, steps, targets, target_names, frame, limits, params,
                                  offsets, windows, built_faces)
                faces = {name: _faces(step, current[name], params.get(("", name)), built_faces)
                         for name, step in ((s.node.name, s) for s in steps)}
                value = _value(built, input_set, faces, c, inner, offsets)
                finite = torch.isfinite(value)
                loss = -value.masked_fill(~finite, 0.0).sum()
                active = {k: group for k, group in params.items() if k[0] in optimisers}
                leaves = [p for group in active.values() for p in group]
                # never into the weights' .grad; a bound that no parameter reaches (constant faces below
                # every parameter, e.g. a step) has no gradient at all
                grads = (torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad
                         else [None] * len(leaves))
            for p, g in zip(leaves, grads):  # a non-finite gradient (an overflowing face) is no direction
                if g is None:
                    p.grad = torch.zeros_like(p)
                elif g.is_contiguous() and g._base is None:  # its own memory: cleaned in place
                    p.grad = g.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
                else:
                    p.grad = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            for optimiser in optimisers.values():
                optimiser.step()
            with torch.no_grad():
                for name, (lo, hi) in current.items():
                    old_lo, old_hi = best_bounds[name]
                    new_lo = torch.maximum(old_lo, lo.detach())
                    best_bounds[name] = (new_lo, torch.maximum(torch.minimum(old_hi, hi.detach()), new_lo))
                best = torch.where(value.detach() > best, value.detach(), best)  # never a NaN
                feasible = {name: built_faces(by_name[name], frame[name])
                            for name in {key[1] for key in active if key not in windows}}
                for key, group in active.items():  # one feasible set per activation (and window)
                    if key in windows:
                        w = windows[key]
                        projected = w.faces(by_name[key[1]], frame[key[1]]).project(group)
                    else:
                        projected = feasible[key[1]].project(group)
                    for p, q in zip(group, projected):
                        p.copy_(q)
            total = float(best.masked_fill(~torch.isfinite(best), 0.0).sum())
            history.append(total)
            if options.stop_when_positive and bool((best > 0).all()):
                break
            if len(history) > options.patience:
                before = history[-1 - options.patience]
                if total - before <= options.tolerance * max(abs(before), 1.0):
                    break
    return best, best_bounds, params, offsets, done


@contextmanager
def _as_constants(tensors: list[Tensor]) -> Iterator[None]:
    """``tensors`` (leaves) without a gradient for the block, as they were afterwards. Only the flag
    changes, never a value, so any computation that overlaps (another thread) still gets the same numbers."""
    changed = [t for t in tensors if t.is_leaf and t.requires_grad]
    for t in changed:
        t.requires_grad_(False)
    try:
        yield
    finally:
        for t in changed:
            t.requires_grad_(True)


def _value(built: BuiltDual, input_set: InputSet, relaxations: dict, c: Tensor, inner: dict[str, Tensor],
           offsets: dict[str, Tensor]) -> Tensor:
    linear, spread = dual_parts(built, input_set, relaxations, c, offsets=offsets, inner=_by_value(built, inner))
    return linear - spread


def _by_value(built: BuiltDual, inner: dict[str, Tensor]) -> dict[str, Tensor]:
    """``inner`` terms are keyed by activation node; the backward pass starts them at its input value."""
    values = {s.node.name: s.variable_inputs[0] for s in built.steps if isinstance(s.layer, ActivationDual)}
    return {values[name]: v for name, v in inner.items()}


def _detached(group: tuple[Tensor, ...] | None) -> tuple[Tensor, ...] | None:
    return None if group is None else tuple(p.detach() for p in group)


def _faces(step, bounds: tuple[Tensor, Tensor], theta: tuple[Tensor, ...] | None,
           built_faces: "_BuiltFaces | None" = None) -> Faces:
    """The step's faces on ``bounds`` with parameters ``theta`` (``None``: its adaptive choice)."""
    return _at(step.layer.faces(*bounds) if built_faces is None else built_faces(step, bounds), theta)


class _BuiltFaces:
    """Each activation's faces (with their free parameters) on its current bounds, built once per bounds
    (:class:`~onnxdual.engine.memo.Memo`): every activation whose bounds are not re-optimised keeps its
    faces through the iterations. The bounds that carry a graph are fresh every iteration, so their faces
    are only reused within it."""

    def __init__(self):
        self._memo = Memo(graphs=True)

    def __call__(self, step, bounds: tuple[Tensor, Tensor]):
        return self._memo(step.node.name, bounds, step.layer.faces)


def _at(faces, theta: tuple[Tensor, ...] | None) -> Faces:
    """``faces`` with parameters ``theta`` where they have free ones (``None``: their adaptive choice)."""
    if not isinstance(faces, ParametricFaces):
        return faces
    return faces.faces(faces.initial() if theta is None else theta)


def _targets(built: BuiltDual, input_set: InputSet, relaxations: dict, steps, bounds, device, dtype,
             offsets: dict[str, Tensor]) -> list[_Target]:
    """Every activation after the first whose bounds matter somewhere in the batch; each example gets the
    rows of its own such units (padded to the batch's most with rows aimed at a dummy unit ``n``), as
    windows where the patches apply to the adaptive ``relaxations`` (the optimised faces have their types)."""
    targets = []
    for step in steps[1:]:
        lower, upper = bounds[step.node.name]
        need = step.layer.needs_bounds(lower, upper).flatten(1)
        k = int(need.sum(1).max()) if need.numel() else 0
        if k == 0:
            continue
        shape = step.input_shapes[0]
        n = math.prod(shape)
        # per example: its units first (in order), then the dummy unit n
        order = torch.sort((~need).to(torch.int8), dim=1, stable=True).indices[:, :k]
        index = torch.where(torch.gather(need, 1, order), order, torch.full_like(order, n))
        plan = patches.plan(built, step.variable_inputs[0], input_set)
        if plan is not None and patches.supported(plan, relaxations):
            real = index < n
            units = torch.cat([index, index], 1).masked_fill(~real.repeat(1, 2), 0)
            sign = real.to(dtype)
            signs = torch.cat([sign, -sign], 1)
            targets.append(_Target(step.node.name, step.variable_inputs[0], shape, index, plan, units,
                                   patches.Rows(plan, built, input_set, units, signs, offsets, reuse=True), None))
            continue
        eye = torch.zeros((need.shape[0], k, n + 1), dtype=dtype, device=device)
        eye.scatter_(2, index.unsqueeze(-1), 1.0)
        eye = eye[:, :, :n]
        rows = torch.cat([eye, -eye], 1).reshape(need.shape[0], 2 * k, *shape)
        targets.append(_Target(step.node.name, step.variable_inputs[0], shape, index, None, None, None, rows))
    return targets


def examples_per_optimization(built: BuiltDual, base: PassResult, rows: int, element: int,
                              options: OptimizeOptions = OptimizeOptions()) -> int:
    """How many examples of ``base``'s batch can be optimised at once with one parameter set per row
    within ``options.memory_budget`` (at least 1): callers split larger batches, because a shared set
    is much looser."""
    steps = [s for s in built.steps if isinstance(s.layer, ActivationDual) and s.node.name in base.relaxations]
    if not steps:  # nothing to optimise: any batch fits
        return max(1, options.memory_budget)
    sizes = [base.preactivation_bounds[s.node.name][0][0].numel() for s in steps]
    need = rows * sum(sizes)
    if options.intermediate:
        for i, step in enumerate(steps[1:], 1):
            lower, upper = base.preactivation_bounds[step.node.name]
            k = int(step.layer.needs_bounds(lower, upper).flatten(1).sum(1).max()) if lower.numel() else 0
            need += 2 * k * sum(sizes[:i])
    return max(1, options.memory_budget // max(4 * need * element, 1))


def _per_row_fits(steps, row_counts: dict[str, int], bounds, batch: int, element: int, budget: int,
                  window_sizes: dict[tuple[str, str], int] | None = None) -> dict[str, bool]:
    """Per target: whether one parameter set per row fits the budget (parameters, gradients and the
    optimiser's two moments: four copies); ``window_sizes``: per (target, activation) kept at windows, the
    elements of one row's window instead of the activation's."""
    order = [s.node.name for s in steps]
    sizes = {name: bounds[name][0][0].numel() for name in order}
    window_sizes = window_sizes or {}
    fits = {}
    for target, rows in row_counts.items():
        earlier = order if target == "" else order[: order.index(target)]
        per_set = sum(window_sizes.get((target, name), sizes[name]) for name in earlier)
        need = 4 * batch * rows * per_set * element
        fits[target] = need <= budget
    return fits


#: keep the parameters of a patched target's rows at its windows (False: whole images, the same values)
WINDOWED_PARAMETERS = True


class _Windowed:
    """The parameters of one (patched target, activation of its plan) pair at the rows' windows
    (:class:`~onnxdual.engine.patches.RowWindows`): element-wise faces are computed on the bounds read at the
    windows, so the optimiser moves ``C x K x K`` values per row instead of a whole image -- the only
    entries of a row's parameters that can change its bound (the row's dual is zero elsewhere)."""

    def __init__(self, rows: patches.RowWindows, initial: tuple[Tensor, ...], bounds: tuple[Tensor, Tensor],
                 faces: ParametricFaces):
        self.rows, self.initial = rows, initial
        self._memo = Memo(graphs=True)
        self._memo.remember("faces", bounds, faces)  # the faces of the starting bounds, built to check the start

    @property
    def shape(self) -> torch.Size:
        return self.initial[0].shape

    def faces(self, step, bounds: tuple[Tensor, Tensor]):
        """The faces on ``bounds`` read at the windows; the same bound tensors as last time (an activation
        that is not re-optimised keeps its tensors every iteration) give the same faces object."""
        return self._memo("faces", bounds, lambda lo, hi: step.layer.faces(self.rows.read(lo), self.rows.read(hi)))

    def window_faces(self, step, bounds: tuple[Tensor, Tensor], theta: tuple[Tensor, ...] | None):
        return patches.WindowFaces(_at(self.faces(step, bounds), theta), self.rows)


def _windows(targets: list[_Target], steps, bounds, batch: int) -> dict[tuple[str, str], _Windowed]:
    """The (target, activation) pairs whose per-row parameters can live at the target rows' windows: the
    activation is on the target's patch plan and its faces, computed on the bounds read at the windows,
    start exactly where the whole-image faces read at the windows do (element-wise faces; anything else,
    e.g. a layer with whole-image constants, keeps whole-image parameters)."""
    out = {}
    for target in targets:
        if target.plan is None:
            continue
        for index, step in enumerate(target.plan.steps):
            if not isinstance(step.layer, ActivationDual) or step.node.name not in bounds:
                continue
            rows = patches.RowWindows(target.plan, index, target.units, batch)
            lower, upper = bounds[step.node.name]
            try:
                whole, windowed = step.layer.faces(lower, upper), step.layer.faces(rows.read(lower),
                                                                                   rows.read(upper))
            except (RuntimeError, ValueError):  # shapes that do not broadcast at windows
                continue
            if not (isinstance(whole, ParametricFaces) and isinstance(windowed, ParametricFaces)):
                continue
            start = tuple(rows.read(t) for t in whole.initial())
            initial = windowed.initial()
            if len(start) == len(initial) and all(a.shape == b.shape and torch.equal(a, rows.read_masked(b))
                                                  for a, b in zip(start, initial)):
                out[(target.name, step.node.name)] = _Windowed(
                    rows, tuple(rows.read_masked(t) for t in initial), (lower, upper), windowed)
    return out


def _bounds(built, input_set, steps, targets: list[_Target], target_names: set[str], bounds, limits, params,
            offsets, windows: dict[tuple[str, str], "_Windowed"], built_faces: _BuiltFaces | None = None,
            ) -> dict[str, tuple[Tensor, Tensor]]:
    """Every activation's input bounds at the current parameters (the adaptive ones where not optimised),
    intersected with the constant ``limits`` (intervals and splits). Two sound bounds can only cross by
    rounding, so a crossing is closed, never read as an empty subdomain (only split limits prove that, in
    the adaptive pass)."""
    current: dict[str, tuple[Tensor, Tensor]] = {}
    by_name = {t.name: t for t in targets}
    for i, step in enumerate(steps):
        name = step.node.name
        lower, upper = bounds[name]
        if name in target_names:
            target = by_name[name]
            relax = {}
            for s in steps[:i]:
                key, theta = (name, s.node.name), params.get((name, s.node.name))
                bounds_s = current[s.node.name]
                relax[s.node.name] = (windows[key].window_faces(s, bounds_s, theta) if key in windows
                                      else _faces(s, bounds_s, theta, built_faces))
            k = target.index.shape[1]
            if target.plan is not None:
                linear, spread = target.windowed.parts(relax)
            else:
                linear, spread = dual_parts(built, input_set, relax, target.rows, start=target.value,
                                            offsets=offsets)
            value = linear - spread
            new_lo, new_hi = value[:, :k], -value[:, k:]
            if name in limits:
                lim_lo, lim_hi = (torch.gather(_with_dummy(v), 1, target.index) for v in limits[name])
                new_lo, new_hi = torch.maximum(new_lo, lim_lo), torch.minimum(new_hi, lim_hi)
            new_hi = torch.maximum(new_hi, new_lo)
            lower = _with_dummy(lower).scatter(1, target.index, new_lo)[:, :-1].reshape(lower.shape)
            upper = _with_dummy(upper).scatter(1, target.index, new_hi)[:, :-1].reshape(upper.shape)
        current[name] = (lower, upper)
    return current


def _with_dummy(v: Tensor) -> Tensor:
    """``(B, *shape)`` flattened, with one extra unit at the end (where padded rows write)."""
    return torch.cat([v.flatten(1), v.new_zeros((v.shape[0], 1))], 1)
