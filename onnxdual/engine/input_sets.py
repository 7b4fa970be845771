"""Perturbation sets for the network input: the first dual layer (Theorem 1, the ``-nu_1^T x - eps ||nu_1||_*``
terms of eq. 7).

* :class:`Box` -- an axis-aligned box ``lower <= x' <= upper``. An l-inf ball ``x +/- eps`` (eps a float or a
  per-coordinate tensor), optionally intersected with a data domain such as pixels in [0, 1], is a box; so
  is a VNN-LIB input region. Dual norm: weighted l1.
* :class:`L2Ball` -- ``||x' - x||_2 <= eps``. Dual norm: l2. A domain clip is not applied to l2 balls: the
  ball itself is used, a sound superset of the clipped set.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from onnxdual.engine.rowdots import row_dot, row_terms
from onnxdual.errors import InvalidInputError


def _check_eps(eps: float | Tensor) -> None:
    if isinstance(eps, Tensor):
        if not torch.isfinite(eps).all() or (eps < 0).any():
            raise InvalidInputError("eps must be finite and non-negative")
        return
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise InvalidInputError(f"eps must be a finite non-negative number, got {eps!r}")


class InputSet(ABC):
    """A set of admissible network inputs, batched: one set per example."""

    norm: str

    @property
    @abstractmethod
    def center(self) -> Tensor:
        """``(B, *in_shape)``: the point the linearised network is evaluated at."""

    @abstractmethod
    def dual_parts(self, nu: Tensor) -> tuple[Tensor, Tensor]:
        """``(nu^T center, ||nu||_*-term)`` for ``nu`` of shape ``(B or 1, m, *in_shape)``, each ``(B, m)``:
        ``min_{x' in set} nu^T x'`` is their difference, ``max`` their sum."""

    def dual_term(self, nu: Tensor) -> Tensor:
        """``min_{x' in set} nu^T x'``: ``(B, m)``."""
        lin, spread = self.dual_parts(nu)
        return lin - spread

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, B, *in_shape)`` points of the set (its vertices/surface are favoured)."""

    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """Euclidean projection of ``(..., B, *in_shape)`` points onto the set."""

    @abstractmethod
    def chunk(self, index: slice) -> "InputSet":
        """The sets of examples ``index``."""

    @abstractmethod
    def interval(self) -> tuple[Tensor, Tensor]:
        """Element-wise bounds ``(lower, upper)`` of the set, ``(B, *in_shape)`` (interval bounds)."""

    def column_range(self) -> tuple[int, int]:
        """The fewest and the most input columns the exact pass needs for any subset of the examples
        (coordinates that no example perturbs need none); sizes memory (:mod:`onnxdual.engine.cost`)."""
        n = self.center[0].numel()
        return n, n


@dataclass(frozen=True)
class Box(InputSet):
    lower: Tensor
    upper: Tensor
    norm: str = "linf"

    @classmethod
    def ball(cls, x: Tensor, eps: float | Tensor, clip: tuple[float, float] | None = None) -> "Box":
        _check_eps(eps)
        eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        try:
            lower, upper = x - eps_t, x + eps_t
        except RuntimeError as exc:
            raise InvalidInputError(f"eps of shape {tuple(eps_t.shape)} does not fit inputs of shape "
                                    f"{tuple(x.shape)}") from exc
        if clip is not None:
            lo, hi = clip
            if lo > hi:
                raise InvalidInputError(f"clip range ({lo}, {hi}) is empty")
            lower, upper = lower.clamp(lo, hi), upper.clamp(lo, hi)
        return cls(lower, upper)

    def __post_init__(self):
        if self.lower.shape != self.upper.shape:
            raise InvalidInputError("box lower and upper bounds must have the same shape")
        if (self.lower > self.upper).any():
            raise InvalidInputError("box lower bound exceeds its upper bound")

    @property
    def center(self) -> Tensor:
        return (self.lower + self.upper) / 2

    @property
    def radius(self) -> Tensor:
        return (self.upper - self.lower) / 2

    def dual_parts(self, nu: Tensor) -> tuple[Tensor, Tensor]:
        return row_terms(nu.flatten(2), self.center.flatten(1), self.radius.flatten(1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand((n, *self.lower.shape), generator=generator).to(self.lower)
        corner = (torch.rand((n, *self.lower.shape), generator=generator) < 0.5).to(self.lower)
        pick_corner = (torch.arange(n) % 2 == 0).to(self.lower.device).reshape(n, *[1] * self.lower.dim())
        t = torch.where(pick_corner.bool(), corner, u)
        return self.lower + t * (self.upper - self.lower)

    def project(self, x: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x, self.upper), self.lower)

    def interval(self) -> tuple[Tensor, Tensor]:
        return self.lower, self.upper

    def chunk(self, index: slice) -> "Box":
        return Box(self.lower[index], self.upper[index], self.norm)

    def column_range(self) -> tuple[int, int]:
        perturbed = (self.radius.flatten(1) > 0)
        return int(perturbed.all(0).sum()), int(perturbed.any(0).sum())


@dataclass(frozen=True)
class L2Ball(InputSet):
    x: Tensor
    eps: float | Tensor
    norm: str = "l2"

    def __post_init__(self):
        _check_eps(self.eps)

    def _eps(self) -> Tensor:
        eps = torch.as_tensor(self.eps, dtype=self.x.dtype, device=self.x.device)
        if eps.dim() > 1 or (eps.dim() == 1 and eps.numel() not in (1, self.x.shape[0])):
            raise InvalidInputError("eps of an l2 ball must be a number or one number per example")
        return eps.reshape(-1, 1) if eps.dim() == 1 else eps

    @property
    def center(self) -> Tensor:
        return self.x

    def dual_parts(self, nu: Tensor) -> tuple[Tensor, Tensor]:
        flat = nu.flatten(2)
        lin = row_dot(flat, self.x.flatten(1))
        return lin, (self._eps() * flat.norm(dim=2)).expand_as(lin)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        d = torch.randn((n, *self.x.shape), generator=generator).to(self.x)
        norms = d.flatten(2).norm(dim=2).clamp_min(1e-12).reshape(n, -1, *[1] * (self.x.dim() - 1))
        scale = torch.where((torch.arange(n) % 2 == 0).to(self.x.device), 1.0,
                            torch.rand(n, generator=generator).to(self.x)).reshape(n, *[1] * self.x.dim())
        eps = self._eps().reshape(-1, *[1] * (self.x.dim() - 1)) if self._eps().dim() else self._eps()
        return self.x + d / norms * eps * scale

    def project(self, x: Tensor) -> Tensor:
        delta = x - self.x
        norms = delta.flatten(-self.x.dim() + 1).norm(dim=-1).clamp_min(1e-12)
        eps = self._eps().reshape(-1) if self._eps().dim() else self._eps()
        factor = torch.clamp(eps / norms, max=1.0)
        return self.x + delta * factor.reshape(*factor.shape, *[1] * (self.x.dim() - 1))

    def interval(self) -> tuple[Tensor, Tensor]:
        eps = self._eps()
        eps = eps.reshape(-1, *[1] * (self.x.dim() - 1)) if eps.dim() else eps
        return self.x - eps, self.x + eps

    def chunk(self, index: slice) -> "L2Ball":
        eps = self.eps
        if isinstance(eps, Tensor) and eps.dim() == 1 and eps.numel() == self.x.shape[0]:
            eps = eps[index]
        return L2Ball(self.x[index], eps, self.norm)


def make_input_set(x: Tensor, eps: float | Tensor, norm: str = "linf",
                   clip: tuple[float, float] | None = None) -> InputSet:
    """The perturbation set the public API describes with ``(x, eps, norm, clip)``."""
    if norm == "linf":
        return Box.ball(x, eps, clip)
    if norm == "l2":
        return L2Ball(x, eps)
    raise InvalidInputError(f"norm must be 'linf' or 'l2', got {norm!r}")
