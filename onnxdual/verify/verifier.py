"""The decision procedure of the ``verify`` command (see :mod:`onnxdual.verify` for the method): dual
bounds of the unsafe rows and their non-negative combinations, input splitting, and PGD counterexamples
confirmed by onnxruntime in float32."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual.engine.input_sets import Box
from onnxdual.engine.network import DualNetwork
from onnxdual.errors import InvalidInputError
from onnxdual.verify.network import Network
from onnxdual.verify.result import SAT, TIMEOUT, UNKNOWN, UNSAT, Deadline, VerifyResult

# --------------------------------------------------------------------------------------- float32 rounding


def _f32_down(v: np.ndarray) -> np.ndarray:
    """The largest float32 values ``<= v`` (as float32)."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def _f32_up(v: np.ndarray) -> np.ndarray:
    """The smallest float32 values ``>= v`` (as float32)."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def dual_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 centre and radius ``(N, n)`` for the dual network whose box (as :class:`Box` computes it in
    float32) contains ``[lower, upper]`` (float64) in real arithmetic. Coordinates fixed at a float32 value
    keep radius 0 (no dual column)."""
    lo, hi = _f32_down(lower), _f32_up(upper)
    center = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    radius = _f32_up(np.maximum(hi.astype(np.float64) - center, center - lo.astype(np.float64)))
    radius = np.where(radius > 0, np.nextafter(radius, np.float32(np.inf)), radius)
    for _ in range(8):
        box = Box.ball(torch.from_numpy(center), torch.from_numpy(radius))
        c, r = box.center.double().numpy(), box.radius.double().numpy()
        short = (c - r > lower) | (c + r < upper)
        if not short.any():
            return center, radius
        grown = np.nextafter(np.maximum(radius, np.float32(1e-30)), np.float32(np.inf))
        radius = np.where(short, np.maximum(grown, radius * np.float32(1 + 2**-20)), radius)
    raise InvalidInputError("cannot represent the input box in float32 (values too large?)")


# ------------------------------------------------------------------------------------------- the verifier


@dataclass
class _Cases:
    """The property's cases, padded to ``D`` conjunctions of ``k`` rows and batched."""

    lower: Tensor  # (K, n) float64
    upper: Tensor  # (K, n)
    inner_lo: Tensor  # (K, n) float32: the float32 points of the box
    inner_hi: Tensor
    has_points: Tensor  # (K,) bool: the box holds a float32 point
    a: Tensor  # (K, D, k, n_out) float64, rows normalised to unit l2 norm (zero rows kept)
    b: Tensor  # (K, D, k)
    rows: Tensor  # (K, D, k) bool: real rows
    disjuncts: Tensor  # (K, D) bool: real conjunctions
    constraints: list  # per case, the OutputConstraint list of the property
    index: list  # per case, its index in prop.cases


@dataclass
class _Stats:
    boxes: int = 0
    attack_steps: int = 0
    bound_seconds: float = 0.0  # measured seconds of bound computations
    bound_boxes: int = 0
    root_margin: float | None = None
    leaf_margin: float = math.inf


class _Found(Exception):
    def __init__(self, x: np.ndarray, y: np.ndarray, case: int):
        self.x, self.y, self.case = x, y, case


class _OutOfTime(Exception):
    pass


class Verifier:
    """Decides VNN-LIB properties of one network.

    Args:
        net: the torch module (:func:`onnxdual.load`).
        input_shape: the input shape onnxruntime expects (with its batch dimension, if any).
        ort_session: an onnxruntime session of the same network, used to confirm counterexamples.
        example_shape: per-example input shape of ``net`` (default ``input_shape[1:]``).
        strict: refuse proofs whose margin is within a float32-rounding tolerance of zero.
        split_max_inputs: split input boxes only when at most this many coordinates are perturbed.
        relu_branching: otherwise, branch on ReLU phases (:mod:`onnxdual.verify.branching`) with the time
            the attacks leave.
        batch_boxes: boxes bounded in one batch.
        lambda_steps: projected-gradient steps on the row combination of a conjunction.
        device: where bounds and attacks are computed (default: the network's device).
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], ort_session, *,
                 example_shape: tuple[int, ...] | None = None, strict: bool = False,
                 split_max_inputs: int = 16, relu_branching: bool = True,
                 batch_boxes: int = 512, lambda_steps: int = 20, device: torch.device | str | None = None):
        self.net = net.eval()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.example_shape = tuple(example_shape) if example_shape is not None else self.input_shape[1:]
        self.session = ort_session
        self.strict = strict
        self.split_max_inputs = split_max_inputs
        self.relu_branching = relu_branching
        self.batch_boxes = max(1, batch_boxes)
        self.lambda_steps = lambda_steps
        if device is None:
            p = next(iter(net.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self._ort_input = ort_session.get_inputs()[0].name

    @classmethod
    def for_network(cls, network: Network, **kwargs) -> Verifier:
        return cls(network.net, network.input_shape, network.session, example_shape=network.example_shape,
                   **kwargs)

    # -- entry point ------------------------------------------------------------------------------------
    def decide(self, prop, timeout: float, seed: int = 0, *,
               deadline: Deadline | None = None) -> VerifyResult:
        """Decide ``prop`` within ``timeout`` seconds (or by ``deadline``). Never raises for a timeout."""
        deadline = deadline or Deadline(timeout)
        stats = _Stats()
        gen = torch.Generator().manual_seed(seed)
        try:
            if deadline.passed():
                raise _OutOfTime
            with torch.no_grad():
                cases = self._prepare(prop)
            if cases is None:
                return self._result(UNSAT, deadline, stats)
            self._trivial(cases)
            answer = self._search(cases, deadline, stats, gen)
        except _Found as found:
            return self._result(SAT, deadline, stats, found)
        except _OutOfTime:
            return self._result(TIMEOUT, deadline, stats)
        return self._result(answer, deadline, stats)

    def _result(self, answer: str, deadline: Deadline, stats: _Stats,
                found: _Found | None = None) -> VerifyResult:
        margin = None
        if answer == UNSAT:
            margin = stats.leaf_margin if math.isfinite(stats.leaf_margin) else None
        elif stats.root_margin is not None:
            margin = stats.root_margin
        if found is not None:
            return VerifyResult(SAT, deadline.elapsed(), found.x, found.y, None, stats.boxes, found.case,
                                stats.attack_steps)
        return VerifyResult(answer, deadline.elapsed(), None, None, margin, stats.boxes, None,
                            stats.attack_steps)

    # -- preparation ------------------------------------------------------------------------------------
    def _prepare(self, prop) -> _Cases | None:
        n_in = math.prod(self.input_shape)
        kept = []
        for i, (region, conjunctions) in enumerate(prop.cases):
            if region.n_inputs != n_in:
                raise InvalidInputError(f"the property has {region.n_inputs} inputs, the network {n_in}")
            lo, hi = np.asarray(region.lower, np.float64), np.asarray(region.upper, np.float64)
            if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                raise InvalidInputError(f"case {i}: every input needs finite lower and upper bounds")
            if not conjunctions or np.any(lo > hi):
                continue  # nothing unsafe here, or an empty box
            kept.append((i, lo, hi, list(conjunctions)))
        if not kept:
            return None
        n_out = kept[0][3][0].A.shape[1]
        d_max = max(len(c) for *_, c in kept)
        k_max = max(1, max(c.A.shape[0] for *_, cs in kept for c in cs))
        K = len(kept)
        a = torch.zeros((K, d_max, k_max, n_out), dtype=torch.float64)
        b = torch.zeros((K, d_max, k_max), dtype=torch.float64)
        rows = torch.zeros((K, d_max, k_max), dtype=torch.bool)
        disjuncts = torch.zeros((K, d_max), dtype=torch.bool)
        lower = torch.zeros((K, n_in), dtype=torch.float64)
        upper = torch.zeros((K, n_in), dtype=torch.float64)
        for j, (_, lo, hi, cs) in enumerate(kept):
            lower[j], upper[j] = torch.from_numpy(lo), torch.from_numpy(hi)
            for d, c in enumerate(cs):
                disjuncts[j, d] = True
                m = c.A.shape[0]
                if m == 0:
                    continue
                norms = np.linalg.norm(c.A, axis=1)
                scale = np.where(norms > 0, norms, 1.0)
                a[j, d, :m] = torch.from_numpy(c.A / scale[:, None])
                b[j, d, :m] = torch.from_numpy(c.b / scale)
                rows[j, d, :m] = True
        inner_lo = torch.from_numpy(_f32_up(lower.numpy()))
        inner_hi = torch.from_numpy(_f32_down(upper.numpy()))
        has_points = (inner_lo <= inner_hi).all(1)
        return _Cases(lower, upper, inner_lo, inner_hi, has_points, a, b, rows, disjuncts,
                      [cs for *_, cs in kept], [i for i, *_ in kept])

    def _trivial(self, cases: _Cases) -> None:
        """A conjunction without rows contains every output: any float32 point of its box is a witness."""
        for j, cs in enumerate(cases.constraints):
            if any(c.A.shape[0] == 0 for c in cs) and bool(cases.has_points[j]):
                x = ((cases.inner_lo[j].double() + cases.inner_hi[j].double()) / 2).float()
                self._confirm(x.numpy(), cases, j)

    # -- counterexamples --------------------------------------------------------------------------------
    def _run_ort(self, flat: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self._ort_input: flat.reshape(self.input_shape).astype(np.float32)})[0]
        return np.asarray(out).reshape(-1)

    def _confirm(self, x: np.ndarray, cases: _Cases, j: int) -> None:
        """Raise :class:`_Found` if the float32 point ``x`` lies in case ``j``'s box and onnxruntime's output
        there meets one of its conjunctions, both with zero tolerance."""
        flat = np.asarray(x, dtype=np.float32).reshape(-1)
        lo = np.asarray(cases.inner_lo[j].numpy(), dtype=np.float32)
        hi = np.asarray(cases.inner_hi[j].numpy(), dtype=np.float32)
        flat = np.minimum(np.maximum(flat, lo), hi)
        x64 = flat.astype(np.float64)
        if not (np.all(cases.lower[j].numpy() <= x64) and np.all(x64 <= cases.upper[j].numpy())):
            return
        y = self._run_ort(flat)
        if not np.all(np.isfinite(y)):
            return
        y64 = y.astype(np.float64)
        for c in cases.constraints[j]:
            if c.contains(y64):
                raise _Found(flat.copy(), y.astype(np.float32).copy(), cases.index[j])

    def _violation(self, y: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor) -> Tensor:
        """``min_d max_i (a_i y - b_i)`` over the open conjunctions of each box's case: ``(N,)``."""
        a = cases.a[cidx].to(self.device, y.dtype)
        b = cases.b[cidx].to(self.device, y.dtype)
        v = torch.einsum("ndko,no->ndk", a, y) - b
        v = v.masked_fill(~cases.rows[cidx].to(self.device), -math.inf).amax(2)
        no_rows = ~cases.rows[cidx].any(2).to(self.device)
        v = torch.where(no_rows, torch.full_like(v, -1.0), v)
        v = v.masked_fill(~(open_mask & cases.disjuncts[cidx]).to(self.device), math.inf)
        return v.amin(1)

    def _forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], *self.example_shape)).reshape(x.shape[0], -1)

    def _check_points(self, x: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor,
                      limit: int = 8) -> Tensor:
        """Evaluate float32 points ``(N, n)``; confirm the most violating ones with onnxruntime. Returns the
        violation of each point (``<= 0``: the torch network reaches the unsafe region)."""
        with torch.no_grad():
            v = self._violation(self._forward(x.to(self.device)), cidx, cases, open_mask).cpu()
        candidates = (v <= 1e-6 * (1 + v.abs())).nonzero().squeeze(1)
        if candidates.numel():
            order = candidates[v[candidates].argsort()][:limit]
            for i in order.tolist():
                self._confirm(x[i].cpu().numpy(), cases, int(cidx[i]))
        return v

    def _attack(self, lo: Tensor, hi: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor, steps: int,
                restarts: int, gen: torch.Generator, deadline: Deadline, stats: _Stats) -> Tensor:
        """Batched PGD on float32 boxes ``lo <= x <= hi`` ``(N, n)``, minimising each box's violation;
        confirms candidates (raises :class:`_Found`). Returns the best violation per box."""
        n = lo.shape[0]
        lo_d, hi_d = lo.to(self.device), hi.to(self.device)
        width = hi_d - lo_d
        best = torch.full((n,), math.inf)
        best_x = lo.clone()
        for restart in range(restarts):
            if restart == 0:
                x = lo_d + width / 2
            else:
                u = torch.rand(lo.shape, generator=gen).to(self.device)
                corner = (torch.rand(lo.shape, generator=gen) < 0.5).to(self.device, lo.dtype)
                pick_corner = torch.rand(n, 1, generator=gen).to(self.device) < 0.5
                x = lo_d + width * torch.where(pick_corner, corner, u)
            for step in range(steps + 1):
                if deadline.passed():
                    raise _OutOfTime
                x = torch.minimum(torch.maximum(x.detach(), lo_d), hi_d).requires_grad_(step < steps)
                with torch.enable_grad() if step < steps else torch.no_grad():
                    v = self._violation(self._forward(x), cidx, cases, open_mask)
                    grad = torch.autograd.grad(v.sum(), x)[0] if step < steps else None
                stats.attack_steps += 1
                vc = v.detach().cpu()
                better = vc < best
                if better.any():
                    best = torch.where(better, vc, best)
                    best_x[better] = x.detach().cpu()[better]
                if grad is None:
                    break
                alpha = 0.5 * (1 + math.cos(math.pi * step / steps)) * 2.0 / max(steps, 4) + 1e-3
                x = x.detach() - alpha * width * grad.sign()
            hits = (best <= 1e-6 * (1 + best.abs())).nonzero().squeeze(1)
            for i in hits[best[hits].argsort()][:8].tolist():
                self._confirm(best_x[i].numpy(), cases, int(cidx[i]))
        return best

    # -- proofs -----------------------------------------------------------------------------------------
    def _tolerance(self, b: Tensor, center: Tensor, n_out: int) -> Tensor:
        """The margin a proof needs, per (box, conjunction): 0, or in strict mode a float32-rounding allowance
        relative to the constants and to the output magnitude at the box ``center`` (rows have unit norm)."""
        if not self.strict:
            return torch.zeros(b.shape[:2], dtype=torch.float64)
        with torch.no_grad():
            y_scale = self._forward(center.reshape(center.shape[0], -1)).double().abs().amax(1).cpu()
        return 1e-5 * (1 + b.abs().amax(2) + y_scale.reshape(-1, 1) * math.sqrt(n_out))

    def _dual_inputs(self, lowers: Tensor, uppers: Tensor) -> tuple[np.ndarray, Tensor, Tensor]:
        """For boxes ``(N, n)`` (float64): the float32 centre (numpy), and the centre and radius tensors of
        the dual network, shaped like the network input, whose box contains them (:func:`dual_box`)."""
        center, radius = dual_box(lowers.numpy(), uppers.numpy())
        shape = (lowers.shape[0], *self.example_shape)
        return (center, torch.from_numpy(center).reshape(shape).to(self.device),
                torch.from_numpy(radius).reshape(shape).to(self.device))

    def _bound_boxes(self, lowers: Tensor, uppers: Tensor, cidx: Tensor, cases: _Cases, open_mask: Tensor,
                     deadline: Deadline, stats: _Stats, lam_init: Tensor | None = None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
        """For boxes ``(N, n)`` (float64) of cases ``cidx``: the best proven margin of each open conjunction
        ``(N, D)`` (closed or padded ones: +inf), the objective direction ``(N, n_out)`` that came closest
        (for choosing split coordinates), and the row weights ``lambda`` found ``(N, D, k)`` (or ``None``),
        which warm-start the sub-boxes (``lam_init``)."""
        n = lowers.shape[0]
        predicted = stats.bound_seconds / max(stats.bound_boxes, 1) * n
        if stats.bound_boxes and predicted > deadline.remaining():
            raise _OutOfTime
        t0 = time.perf_counter()
        a, b, rows = cases.a[cidx], cases.b[cidx], cases.rows[cidx]
        live = open_mask & cases.disjuncts[cidx]
        _, d, k, n_out = a.shape
        center, center_t, radius_t = self._dual_inputs(lowers, uppers)
        dual = DualNetwork(self.net, center_t, radius_t)
        count = rows.sum(2, keepdim=True).clamp(min=1)
        sum_a = (a * rows.unsqueeze(-1)).sum(2) / count
        sum_b = (b * rows).sum(2) / count.squeeze(2)
        c = torch.cat([a.reshape(n, d * k, n_out), sum_a], 1)
        with torch.no_grad():
            lb = dual.lower_bound(c.to(self.device, torch.float32)).double().cpu()
        row_m = (lb[:, : d * k].reshape(n, d, k) - b).masked_fill(~rows, -math.inf)
        sum_m = lb[:, d * k:] - sum_b
        margin = torch.maximum(row_m.amax(2), sum_m.masked_fill(~rows.any(2), -math.inf))
        tol = self._tolerance(b, center_t, n_out)
        direction = torch.where((row_m.amax(2) >= sum_m).unsqueeze(-1),
                                torch.gather(a, 2, row_m.argmax(2)[..., None, None].expand(n, d, 1, n_out))
                                .squeeze(2), sum_a)
        need = live & (margin <= tol) & (rows.sum(2) >= 2)
        lam = None
        if need.any() and self.lambda_steps > 0:
            lam_m, lam_dir, lam = self._optimise_lambda(dual, a, b, rows, need, tol, deadline, lam_init)
            better = lam_m > margin
            margin = torch.where(better, lam_m, margin)
            direction = torch.where(better.unsqueeze(-1), lam_dir, direction)
        margin = margin - tol
        margin = margin.masked_fill(~live, math.inf)
        # the open conjunctions that came closest decide the split direction
        weight = (live & (margin <= 0)).double().unsqueeze(-1)
        stats.bound_seconds += time.perf_counter() - t0
        stats.bound_boxes += n
        stats.boxes += n
        # box centres are free attack points
        x_center = torch.from_numpy(np.clip(center, cases.inner_lo[cidx].numpy(),
                                            cases.inner_hi[cidx].numpy()))
        self._check_points(x_center, cidx, cases, open_mask & (margin <= 0))
        return margin, (direction * weight).sum(1), lam

    def _optimise_lambda(self, dual: DualNetwork, a: Tensor, b: Tensor, rows: Tensor, need: Tensor,
                         tol: Tensor, deadline: Deadline, lam_init: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Projected gradient ascent of ``lb(lambda^T A y) - lambda^T b`` over the simplex, for the
        conjunctions in ``need`` ``(N, D)``, from ``lam_init`` (a parent box's weights; fewer steps) or the
        uniform weights. Every iterate is a sound bound; returns the best value per conjunction ``(N, D)``
        (``-inf`` where not optimised), its direction ``lambda^T A`` and its weights ``lambda``."""
        n, d, _, n_out = a.shape
        a_d = a.to(self.device, torch.float32)
        b_d = b.to(self.device, torch.float32)
        valid = rows.to(self.device)
        lam = valid.float() / valid.sum(2, keepdim=True).clamp(min=1)
        steps = self.lambda_steps
        if lam_init is not None:  # negative entries: no weights yet
            init = lam_init.to(self.device, torch.float32)
            known = (init >= 0).all(2, keepdim=True)
            lam = torch.where(known & valid, init, lam)
            if bool(known.squeeze(2)[need.to(self.device)].all()):
                steps = max(3, steps // 3)
        best = torch.full((n, d), -math.inf, dtype=torch.float64)
        best_dir = torch.zeros((n, d, n_out), dtype=torch.float64)
        best_lam = lam.detach().cpu().clone()
        need_d = need.to(self.device)
        stall = 0
        for step in range(steps):
            if deadline.passed():
                break
            lam = lam.detach().requires_grad_(True)
            with torch.enable_grad():
                direction = torch.einsum("ndk,ndko->ndo", lam, a_d)
                lb = dual.lower_bound(direction.reshape(n, d, n_out))
                value = lb - (lam * b_d).sum(2)
                (grad,) = torch.autograd.grad(value[need_d].sum(), lam)
            # the certified value, the constants in float64: lb(lambda^T A y) - lambda^T b
            value_c = lb.detach().double().cpu() - (lam.detach().double().cpu() * b).sum(2)
            better = value_c > best + 1e-9 * (1 + best.abs().nan_to_num(posinf=0.0, neginf=0.0))
            best = torch.where(better, value_c, best)
            best_dir = torch.where(better.unsqueeze(-1), direction.detach().double().cpu(), best_dir)
            best_lam = torch.where(better.unsqueeze(-1), lam.detach().cpu(), best_lam)
            if bool(((best > tol) | ~need).all()):
                break
            stall = 0 if bool((better & need).any()) else stall + 1
            if stall >= 4:
                break
            g = grad.masked_fill(~valid, 0.0)
            g = g / g.abs().amax(2, keepdim=True).clamp(min=1e-12)
            lam = _project_simplex(lam.detach() + (0.5 / math.sqrt(step + 1)) * g, valid)
        best_lam = torch.where(need.unsqueeze(-1), best_lam, torch.full_like(best_lam, -1.0))
        return best.masked_fill(~need, -math.inf), best_dir, best_lam

    # -- the search -------------------------------------------------------------------------------------
    def _search(self, cases: _Cases, deadline: Deadline, stats: _Stats, gen: torch.Generator) -> str:
        all_cases = torch.arange(cases.lower.shape[0])
        attackable = cases.has_points
        # 1. a quick attack on every case
        if attackable.any():
            idx = all_cases[attackable]
            self._check_points((cases.inner_lo[idx] + (cases.inner_hi[idx] - cases.inner_lo[idx]) / 2), idx,
                               cases, cases.disjuncts[idx])
            self._attack(cases.inner_lo[idx], cases.inner_hi[idx], idx, cases, cases.disjuncts[idx], steps=15,
                         restarts=1, gen=gen, deadline=deadline, stats=stats)
        # a box without float32 points (inputs fixed at values float32 cannot represent) whose real centre
        # clearly reaches the unsafe region can neither be proven safe nor given a float32 witness
        if not attackable.all():
            idx = all_cases[~attackable]
            centre = ((cases.lower[idx] + cases.upper[idx]) / 2).float()
            with torch.no_grad():
                y = self._forward(centre.to(self.device))
                v = self._violation(y, idx, cases, cases.disjuncts[idx]).cpu()
            if bool((v < -1e-4 * (1 + v.abs())).any()):
                return self._give_up(cases, deadline, stats, gen)
        # 2. bound every case, then split what stays open
        perturbed = (cases.upper > cases.lower).sum(1)
        splittable = bool((perturbed <= self.split_max_inputs).all())
        split_cost = 0.0  # measured seconds per box of the split scores
        queue_lo, queue_hi = [cases.lower], [cases.upper]
        queue_c, queue_open = [all_cases], [cases.disjuncts.clone()]
        queue_lam = [torch.full(cases.rows.shape, -1.0)]  # row weights to warm-start each box with
        first = True
        batches = 0
        per_box = 0.0  # measured seconds per box of a whole iteration (bounds, lambda, split scores)
        while queue_lo:
            lo_all, hi_all = torch.cat(queue_lo), torch.cat(queue_hi)
            c_all, open_all, lam_all = torch.cat(queue_c), torch.cat(queue_open), torch.cat(queue_lam)
            take = min(self.batch_boxes, lo_all.shape[0])
            if per_box:  # never start a batch the measured cost says cannot finish in time
                fits = deadline.remaining() / per_box
                if fits < 1:
                    raise _OutOfTime
                take = int(min(take, fits))
            t_batch = time.perf_counter()
            lo, hi, cidx, open_mask = lo_all[-take:], hi_all[-take:], c_all[-take:], open_all[-take:]
            rest = lo_all.shape[0] - take
            queue_lo, queue_hi = ([lo_all[:rest]], [hi_all[:rest]]) if rest else ([], [])
            queue_c, queue_open = ([c_all[:rest]], [open_all[:rest]]) if rest else ([], [])
            lam_init, queue_lam = lam_all[-take:], ([lam_all[:rest]] if rest else [])
            if deadline.passed():
                raise _OutOfTime
            margin, direction, lam = self._bound_boxes(lo, hi, cidx, cases, open_mask, deadline, stats,
                                                       lam_init)
            lam = lam_init if lam is None else lam
            batches += 1
            worst = margin.amin(1)
            if first:
                stats.root_margin = float(worst.min())
                first = False
            proven = worst > 0
            if proven.any():
                stats.leaf_margin = min(stats.leaf_margin, float(worst[proven].min()))
            if proven.all():
                per_box = max(per_box, (time.perf_counter() - t_batch) / take)
                continue
            if not splittable:
                answer = self._give_up(cases, deadline, stats, gen)
                if not self.relu_branching:
                    return answer
                todo = (~proven).nonzero().squeeze(1)  # with the root boxes not bounded yet, if any
                return self._branch_relus(cases, torch.cat([cidx[todo], *queue_c]),
                                          torch.cat([open_mask[todo] & ~(margin[todo] > 0), *queue_open]),
                                          deadline, stats, answer)
            todo = (~proven).nonzero().squeeze(1)
            lo, hi, cidx = lo[todo], hi[todo], cidx[todo]
            still_open = open_mask[todo] & ~(margin[todo] > 0)
            width = hi - lo
            if bool((width.amax(1) <= 1e-9 * (1 + hi.abs().amax(1))).any()):
                return self._give_up(cases, deadline, stats, gen)  # cannot split further
            if deadline.remaining() < split_cost * todo.numel():
                raise _OutOfTime
            t_split = time.perf_counter()
            score = self._split_scores(lo, hi, direction[todo]).masked_fill(width <= 0, 0.0)
            split_cost = max(0.5 * split_cost, (time.perf_counter() - t_split) / todo.numel())
            score = torch.where(score.amax(1, keepdim=True) > 0, score, width)
            dim = score.argmax(1)
            rows = torch.arange(todo.numel())
            mid = (lo[rows, dim] + hi[rows, dim]) / 2
            left_hi, right_lo = hi.clone(), lo.clone()
            left_hi[rows, dim], right_lo[rows, dim] = mid, mid
            queue_lo += [lo, right_lo]
            queue_hi += [left_hi, hi]
            queue_c += [cidx, cidx]
            queue_open += [still_open, still_open]
            queue_lam += [lam[todo], lam[todo]]
            per_box = max(0.5 * per_box, (time.perf_counter() - t_batch) / take)
            if batches % 8 == 0:  # a deep search may be hiding a counterexample: attack the worst boxes
                pick = worst[todo].argsort()[:16]
                ilo, ihi = _f32_up(lo[pick].numpy()), _f32_down(hi[pick].numpy())
                ok = torch.from_numpy((ilo <= ihi).all(1))
                if ok.any():
                    self._attack(torch.from_numpy(ilo)[ok], torch.from_numpy(ihi)[ok], cidx[pick][ok], cases,
                                 still_open[pick][ok], steps=10, restarts=1, gen=gen, deadline=deadline,
                                 stats=stats)
        return UNSAT

    def _split_scores(self, lo: Tensor, hi: Tensor, direction: Tensor) -> Tensor:
        """How much splitting each input coordinate should help, for boxes ``(N, n)``: the sensitivity of the
        dual bound of ``direction . f`` to each coordinate's radius, ``|d lb / d r_i| * r_i`` (this accounts
        for the intermediate relaxations too, unlike a gradient of the network)."""
        _, c, r = self._dual_inputs(lo, hi)
        r.requires_grad_(True)
        with torch.enable_grad():
            rows = direction.to(self.device, torch.float32).unsqueeze(1)
            lb = DualNetwork(self.net, c, r).lower_bound(rows)
            (g,) = torch.autograd.grad(lb.sum(), r)
        return (g.abs() * r.detach()).reshape(lo.shape[0], -1).double().cpu()

    def _branch_relus(self, cases: _Cases, case_ids: Tensor, open_mask: Tensor, deadline: Deadline,
                      stats: _Stats, otherwise: str) -> str:
        """ReLU branch and bound on the unproven root boxes (their inputs are too many to split)."""
        from onnxdual.verify.branching import ReluBranching, relu_layers

        layers = relu_layers(self.net, self.example_shape)
        if not layers:
            return otherwise
        search = ReluBranching(self, cases, layers)
        return UNSAT if search.run(search.roots(case_ids, open_mask), deadline, stats) else otherwise

    def _give_up(self, cases: _Cases, deadline: Deadline, stats: _Stats, gen: torch.Generator) -> str:
        """Bounds cannot decide: stronger attacks with a bounded budget, else ``unknown``. First on every
        case at once, then targeted: each conjunction of each case attacked on its own (the minimum over
        conjunctions sends the gradient to one of them only)."""
        idx = torch.arange(cases.lower.shape[0])[cases.has_points]
        if not idx.numel():
            return UNKNOWN
        self._attack(cases.inner_lo[idx], cases.inner_hi[idx], idx, cases, cases.disjuncts[idx], steps=50,
                     restarts=4, gen=gen, deadline=deadline, stats=stats)
        pairs = cases.disjuncts[idx].nonzero()  # (case position, conjunction)
        if pairs.shape[0] > 1:
            for chunk in pairs.split(64):
                cidx = idx[chunk[:, 0]]
                target = torch.zeros((chunk.shape[0], cases.disjuncts.shape[1]), dtype=torch.bool)
                target[torch.arange(chunk.shape[0]), chunk[:, 1]] = True
                self._attack(cases.inner_lo[cidx], cases.inner_hi[cidx], cidx, cases, target, steps=50,
                             restarts=2, gen=gen, deadline=deadline, stats=stats)
        return UNKNOWN


def _project_simplex(v: Tensor, valid: Tensor) -> Tensor:
    """Euclidean projection of each ``v[..., :]`` onto the probability simplex over its ``valid`` entries
    (the others are 0)."""
    k = v.shape[-1]
    masked = v.masked_fill(~valid, -math.inf)
    u, _ = masked.sort(-1, descending=True)
    u = torch.where(torch.isfinite(u), u, torch.zeros_like(u))
    css = u.cumsum(-1) - 1
    ks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    count = valid.sum(-1, keepdim=True)
    cond = (u - css / ks > 0) & (ks <= count)
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    rho = torch.where(cond.any(-1, keepdim=True), rho, torch.zeros_like(rho))
    theta = torch.gather(css, -1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0).masked_fill(~valid, 0.0)
