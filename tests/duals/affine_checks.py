"""Exactness checks of affine dual layers beyond the network-level ones of ``tests/dual_checks.py``: per
layer, ``transpose`` is the adjoint of ``linear`` (its vector-Jacobian product), ``abs_linear`` is ``|A|``
applied to radii, and ``forward`` is ``linear`` plus the offset."""

from __future__ import annotations

import math

import torch

from onnxdual.duals.base import AffineDual
from onnxdual.engine.build import build_dual
from tests.dual_checks import check_dual


def check_exact(model, x, layers: int = 1):
    """The network-level check (onnxruntime parity, sampled soundness, exact bounds) and, per affine layer,
    :func:`check_affine_layers` (at least ``layers`` of them). Returns the loaded network."""
    net, _, _ = check_dual(model, x, exact=True)
    assert check_affine_layers(net, torch.tensor(x, dtype=torch.float32)) >= layers
    return net


def check_affine_layers(net, x: torch.Tensor, seed: int = 0) -> int:
    """Check every affine layer of ``net`` built for inputs like ``x``; returns how many were checked."""
    gen = torch.Generator().manual_seed(seed)
    built = build_dual(net, x)
    checked = 0
    for step in built.steps:
        layer = step.layer
        if not isinstance(layer, AffineDual):
            continue
        shapes = step.input_shapes
        xs = [torch.randn(1, *s, generator=gen) for s in shapes]
        out = layer.linear(*xs)
        n_out = math.prod(out.shape[1:])
        jacobians = []
        for i, s in enumerate(shapes):  # A_i as a dense (out, in_i) matrix
            def f(z, i=i):
                args = [t if j != i else z.reshape(1, *s) for j, t in enumerate(xs)]
                return layer.linear(*args).reshape(-1)
            jacobians.append(torch.autograd.functional.jacobian(f, xs[i].reshape(-1)).reshape(n_out, -1))
        want = sum(j @ t.reshape(-1) for j, t in zip(jacobians, xs))
        torch.testing.assert_close(out.reshape(-1), want, rtol=1e-5, atol=1e-5)  # linear is linear
        nu = torch.randn(1, *out.shape[1:], generator=gen)
        for j, got in zip(jacobians, layer.transpose(nu)):
            torch.testing.assert_close(got.reshape(-1), j.T @ nu.reshape(-1), rtol=1e-5, atol=1e-5)
        radii = [torch.rand(1, *s, generator=gen) for s in shapes]
        spread = layer.abs_linear(*radii)
        if spread is not None:
            want = sum(j.abs() @ r.reshape(-1) for j, r in zip(jacobians, radii))
            torch.testing.assert_close(spread.reshape(-1), want, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(layer.forward(*xs), layer.linear(*xs) + layer.offset(), rtol=1e-5,
                                       atol=1e-5)
        checked += 1
    return checked
