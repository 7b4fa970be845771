"""The one margin certifier: the certified lower bound of a network's smallest margin around its own
prediction, ``min_{j != p} f_p - f_j`` with ``p = argmax f(x)`` (Theorem 1 with ``c = e_p - e_j``).

Alg. 2 certifies a stage's *prediction*; certify reports the bound, cascades keep the examples whose bound
is positive. Exact dual bounds are a proof; with ``probable = delta`` the bound holds with probability at least
``1 - delta`` per example (App. E).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onnxdual.engine.network import DualNetwork, margin_matrix


def worst_margins(net: nn.Module, x: Tensor, eps: float, norm: str = "linf",
                  clip: tuple[float, float] | None = None, probable: float | None = None,
                  projections: tuple[int, int] = (200, 10), num_classes: int | None = None,
                  generator: torch.Generator | None = None, relaxation: str = "paper") -> tuple[Tensor, Tensor]:
    """Prediction ``p`` and the lower bound of ``min_{j != p} f_p(x') - f_j(x')`` over the eps-ball of each
    example of ``x``. ``generator`` draws the projections of a probable bound; ``relaxation`` is the exact
    bound's (a probable bound always uses the paper's, whose dual is linear)."""
    with torch.no_grad():
        logits = net(x).flatten(1)
        pred = logits.argmax(1)
        n_classes = logits.shape[1] if num_classes is None else num_classes
        dual = DualNetwork(net, x, eps, norm, clip=clip, generator=generator,
                           relaxation=relaxation if probable is None else "paper")
        c = margin_matrix(pred, n_classes).to(x.dtype)
        if probable is None:
            lb = dual.lower_bound(c)
        else:
            k, m = projections
            lb = dual.probable_lower_bound(c, probable, k, m).value
        lb[torch.arange(x.shape[0], device=x.device), pred] = float("inf")
    return pred, lb.min(1).values


def certified_predictions(net: nn.Module, x: Tensor, eps: float, norm: str = "linf",
                          clip: tuple[float, float] | None = None, batch_size: int = 200) -> Tensor:
    """Which examples of ``x`` have their prediction certified by exact bounds (batches of ``batch_size``)."""
    out = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        out[start:start + xb.shape[0]] = worst_margins(net, xb, eps, norm, clip)[1] > 0
    return out
