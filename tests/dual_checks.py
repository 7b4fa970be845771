"""The shared check every dual layer gets: a one-node ONNX model whose converted forward must equal
onnxruntime's, and whose bounds must contain every sampled output (and be exact for affine nodes); and the
finite-difference check of a loss's gradients."""

from __future__ import annotations

import math

import numpy as np
import torch

import onnxdual
from tests.onnx_builders import make_model, run_ort


def check_dual(model, x: np.ndarray, eps=0.3, norm="linf", clip=None, exact=False, samples=512, seed=0,
               **options):
    """``options`` go to :class:`onnxdual.DualNetwork` (e.g. ``relaxation="adaptive"``)."""
    net = onnxdual.load(model)
    xt = torch.tensor(x, dtype=torch.float32)
    expected = run_ort(model, x)
    with torch.no_grad():
        got = net(xt).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    dual = onnxdual.DualNetwork(net, xt, eps, norm, clip=clip, **options)
    n = math.prod(expected.shape[1:])
    eye = torch.eye(n)
    c = torch.cat([eye, -eye]).unsqueeze(0).expand(x.shape[0], -1, -1)
    with torch.no_grad():
        lb = dual.lower_bound(c)
        lower, upper = lb[:, :n], -lb[:, n:]
        assert (lower <= upper + 1e-5).all()
        pts = dual.input_set.sample(samples, torch.Generator().manual_seed(seed))
        vals = net(pts.flatten(0, 1)).reshape(samples, x.shape[0], n)
    tol = 1e-5 * (1 + vals.abs())
    assert (vals >= lower - tol).all(), f"lower bound violated by {(lower - vals).max().item()}"
    assert (vals <= upper + tol).all(), f"upper bound violated by {(vals - upper).max().item()}"
    if exact:  # an affine network: the dual bound is the exact minimum, attained at a vertex of the box
        box = dual.input_set
        for b in range(x.shape[0]):
            jac = torch.autograd.functional.jacobian(lambda z: net(z.unsqueeze(0)).flatten(), box.center[b])
            jac = jac.reshape(n, -1)
            centre_val = net(box.center[b : b + 1]).flatten()
            exact_low = centre_val - jac.abs() @ box.radius[b].flatten()
            np.testing.assert_allclose(lower[b].numpy(), exact_low.detach().numpy(), rtol=1e-4, atol=1e-4)
    return net, lower, upper


def assert_finite_differences(loss, params, samples: int, h: float = 1e-6) -> None:
    """The autograd gradient of ``loss()`` equals central differences at ``samples`` entries per parameter."""
    grads = torch.autograd.grad(loss(), params)
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // samples)):
            old = flat[i].item()
            flat[i] = old + h
            up = loss().item()
            flat[i] = old - h
            down = loss().item()
            flat[i] = old
            assert abs((up - down) / (2 * h) - g.view(-1)[i].item()) < 1e-4 * (1 + abs(g.view(-1)[i].item()))
