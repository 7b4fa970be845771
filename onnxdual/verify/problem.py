"""The verification problem: a property's cases batched as tensors, the float32 rounding of their input boxes,
the network seen with flat inputs, and the margin a proof needs.

Arithmetic: the input box handed to the dual network is rounded *outwards* to float32 and checked
(:func:`dual_box`), so the bound covers every real input of the box; a witness must be a float32 point of
the box, so the attacks search its *inner* float32 box (:class:`Cases` ``inner_lo`` / ``inner_hi``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from onnxdual.engine.input_sets import Box
from onnxdual.errors import InvalidInputError

# --------------------------------------------------------------------------------------- float32 rounding


def f32_down(v: np.ndarray) -> np.ndarray:
    """The largest float32 values ``<= v`` (as float32)."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def f32_up(v: np.ndarray) -> np.ndarray:
    """The smallest float32 values ``>= v`` (as float32)."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def float32_points(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The float32 points of boxes ``(N, n)`` (float64): the inner float32 box ``[inner_lo, inner_hi]`` and
    whether it holds a point ``(N,)``."""
    inner_lo = torch.from_numpy(f32_up(lower.numpy()))
    inner_hi = torch.from_numpy(f32_down(upper.numpy()))
    return inner_lo, inner_hi, (inner_lo <= inner_hi).all(1)


def dual_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 centre and radius ``(N, n)`` for the dual network whose box (as :class:`Box` computes it in
    float32) contains ``[lower, upper]`` (float64) in real arithmetic. Coordinates fixed at a float32 value
    keep radius 0 (no dual column)."""
    lo, hi = f32_down(lower), f32_up(upper)
    center = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    radius = f32_up(np.maximum(hi.astype(np.float64) - center, center - lo.astype(np.float64)))
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


# ------------------------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class Model:
    """The torch network as the search sees it: flat inputs ``(N, n)``, flat outputs ``(N, n_out)``."""

    net: nn.Module
    example_shape: tuple[int, ...]  # per-example input shape of ``net``
    device: torch.device  # where bounds and attacks are computed

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], *self.example_shape)).reshape(x.shape[0], -1)

    def dual_inputs(self, lowers: Tensor, uppers: Tensor) -> tuple[np.ndarray, Tensor, Tensor]:
        """For boxes ``(N, n)`` (float64): the float32 centre (numpy), and the centre and radius tensors of
        the dual network, shaped like the network input, whose box contains them (:func:`dual_box`)."""
        center, radius = dual_box(lowers.numpy(), uppers.numpy())
        shape = (lowers.shape[0], *self.example_shape)
        return (center, torch.from_numpy(center).reshape(shape).to(self.device),
                torch.from_numpy(radius).reshape(shape).to(self.device))


# --------------------------------------------------------------------------------------------- the cases


@dataclass
class Cases:
    """The property's cases, padded to ``D`` conjunctions of ``k`` rows and batched."""

    lower: Tensor  # (K, n) float64: the box proofs cover
    upper: Tensor  # (K, n)
    inner_lo: Tensor  # (K, n) float32: the float32 points of the witness box (InputRegion.witness_lower ...)
    inner_hi: Tensor
    has_points: Tensor  # (K,) bool: the witness box holds a float32 point
    a: Tensor  # (K, D, k, n_out) float64, rows normalised to unit l2 norm (zero rows kept)
    b: Tensor  # (K, D, k)
    rows: Tensor  # (K, D, k) bool: real rows
    strict: Tensor  # (K, D, k) bool: rows written with '<' (OutputConstraint.strict)
    disjuncts: Tensor  # (K, D) bool: real conjunctions
    constraints: list  # per case, the OutputConstraint list of the property
    index: list  # per case, its index in prop.cases
    witness_lower: Tensor  # (K, n) float64: where a witness must lie (inside the box)
    witness_upper: Tensor

    def in_witness_box(self, j: int, x: np.ndarray) -> bool:
        """Whether the flat point ``x`` (float64 values) lies in case ``j``'s witness box, zero tolerance."""
        return bool(np.all(self.witness_lower[j].numpy() <= x) and np.all(x <= self.witness_upper[j].numpy()))

    def violation(self, y: Tensor, cidx: Tensor, open_mask: Tensor) -> Tensor:
        """``min_d max_i (a_i y - b_i)`` over the open conjunctions of each box's case, for outputs ``y``
        ``(N, n_out)`` of boxes of cases ``cidx``: ``(N,)`` (``<= 0``: ``y`` is unsafe)."""
        device = y.device
        a = self.a[cidx].to(device, y.dtype)
        b = self.b[cidx].to(device, y.dtype)
        v = torch.einsum("ndko,no->ndk", a, y) - b
        v = v.masked_fill(~self.rows[cidx].to(device), -math.inf).amax(2)
        no_rows = ~self.rows[cidx].any(2).to(device)
        v = torch.where(no_rows, torch.full_like(v, -1.0), v)
        v = v.masked_fill(~(open_mask & self.disjuncts[cidx]).to(device), math.inf)
        return v.amin(1)


def batch_cases(prop, n_inputs: int) -> Cases | None:
    """The cases of ``prop`` that can hold an unsafe input, batched (``None``: there is none). Raises
    :class:`InvalidInputError` for a case whose size differs from the network's or has an infinite bound."""
    kept = []
    for i, (region, conjunctions) in enumerate(prop.cases):
        if region.n_inputs != n_inputs:
            raise InvalidInputError(f"the property has {region.n_inputs} inputs, the network {n_inputs}")
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
    strict = torch.zeros((K, d_max, k_max), dtype=torch.bool)
    disjuncts = torch.zeros((K, d_max), dtype=torch.bool)
    lower = torch.zeros((K, n_inputs), dtype=torch.float64)
    upper = torch.zeros((K, n_inputs), dtype=torch.float64)
    w_lower, w_upper = torch.zeros_like(lower), torch.zeros_like(upper)
    for j, (i, lo, hi, cs) in enumerate(kept):
        lower[j], upper[j] = torch.from_numpy(lo), torch.from_numpy(hi)
        region = prop.cases[i][0]
        w_lower[j], w_upper[j] = torch.from_numpy(region.witness_lower), torch.from_numpy(region.witness_upper)
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
            strict[j, d, :m] = torch.from_numpy(c.strict)
    inner_lo, inner_hi, has_points = float32_points(w_lower, w_upper)
    return Cases(lower, upper, inner_lo, inner_hi, has_points, a, b, rows, strict, disjuncts,
                 [cs for *_, cs in kept], [i for i, *_ in kept], w_lower, w_upper)


# ----------------------------------------------------------------------------------------------- problem


@dataclass(frozen=True)
class Problem:
    """What every part of the search shares: the network, the batched cases and the proof tolerance."""

    model: Model
    cases: Cases
    strict: bool = False  # refuse proofs whose margin is within a float32-rounding tolerance of zero

    def tolerance(self, b: Tensor, center: Tensor, n_out: int) -> Tensor:
        """The margin a proof needs, per (box, conjunction): 0, or in strict mode a float32-rounding
        allowance relative to the constants ``b`` ``(N, D, k)`` and to the output magnitude at the box
        ``center`` (rows have unit norm)."""
        if not self.strict:
            return torch.zeros(b.shape[:2], dtype=torch.float64)
        return self.rounding_allowance(b, center, n_out)

    def rounding_allowance(self, b: Tensor, center: Tensor, n_out: int) -> Tensor:
        """The float32-rounding allowance of strict proofs, per (box, conjunction) ``(N, D)``."""
        with torch.no_grad():
            y_scale = self.model.forward(center.reshape(center.shape[0], -1)).double().abs().amax(1).cpu()
        return 1e-5 * (1 + b.abs().amax(2) + y_scale.reshape(-1, 1) * math.sqrt(n_out))
