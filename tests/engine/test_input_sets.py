"""Input sets' dual terms (:mod:`onnxdual.engine.input_sets`): values and gradients."""

from __future__ import annotations

import pytest
import torch

from onnxdual.engine.input_sets import Box


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("which", ["both", "linear", "spread"])
@pytest.mark.parametrize("rows, boxes", [(3, 3), (1, 3), (3, 1)])
def test_box_terms_and_their_gradients_equal_autograds_own(dtype, which, rows, boxes):
    # the box's terms nu.c and |nu|.r have a hand-written gradient; it must be autograd's (to rounding: one
    # fused multiply-add), including the zeros of nu (where |.| has gradient 0), for nu and for the box itself,
    # also where one set of rows serves a batch of boxes or the reverse (robust training: broadcast shapes)
    gen = torch.Generator().manual_seed(3)
    nu = torch.randn((rows, 5, 2, 4), generator=gen, dtype=dtype)
    nu[0, 0, 0] = 0.0
    lower = torch.randn((boxes, 2, 4), generator=gen, dtype=dtype)
    upper = lower + torch.rand((boxes, 2, 4), generator=gen, dtype=dtype)
    w_lin, w_spread = (torch.randn((3, 5), generator=gen, dtype=dtype) for _ in range(2))

    def loss(lin, spread):
        return {"both": (lin * w_lin).sum() - (spread * w_spread).sum(), "linear": (lin * w_lin).sum(),
                "spread": (spread * w_spread).sum()}[which]

    leaves = [t.clone().requires_grad_(True) for t in (nu, lower, upper)]
    lin, spread = Box(leaves[1], leaves[2]).dual_parts(leaves[0])
    ours = torch.autograd.grad(loss(lin, spread), leaves, allow_unused=True)
    plain = [t.clone().requires_grad_(True) for t in (nu, lower, upper)]
    flat = plain[0].flatten(2)
    centre = ((plain[1] + plain[2]) / 2).flatten(1).unsqueeze(-1)
    radius = ((plain[2] - plain[1]) / 2).flatten(1).unsqueeze(-1)
    lin_ref, spread_ref = (flat @ centre).squeeze(-1), (flat.abs() @ radius).squeeze(-1)
    assert torch.equal(lin, lin_ref) and torch.equal(spread, spread_ref)
    theirs = torch.autograd.grad(loss(lin_ref, spread_ref), plain, allow_unused=True)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert torch.equal(ours[0][0, 0, 0], theirs[0][0, 0, 0])  # at nu = 0: the linear term's gradient only
