"""The engine's Adam (:mod:`onnxdual.engine.adam`) is torch.optim.Adam with ExponentialLR, step for step."""

from __future__ import annotations

import pytest
import torch

from onnxdual.engine.adam import Adam


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_same_iterates_as_torch_adam_with_exponential_decay(dtype):
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn((3, 4, 5), generator=gen, dtype=dtype), torch.randn(7, generator=gen, dtype=dtype)]
    theirs = [p.clone() for p in ours]
    adam = Adam(ours, lr=0.5, decay=0.98)
    reference = torch.optim.Adam(theirs, lr=0.5)
    schedule = torch.optim.lr_scheduler.ExponentialLR(reference, 0.98)
    for step in range(25):
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in ours]
        if step % 5 == 3:
            grads[1] = torch.zeros_like(grads[1])  # a zero gradient still moves by momentum
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        adam.step()
        reference.step()
        schedule.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), step


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_and_subnormal_second_moments_give_torch_adams_steps(dtype):
    # the denominator raises the second moment to the smallest normal number (a fast square root); the
    # steps must stay torch's, bit for bit, for never-touched entries and for gradients whose squares underflow
    tiny = torch.finfo(dtype).tiny
    gen = torch.Generator().manual_seed(2)
    ours = [torch.randn(64, generator=gen, dtype=dtype)]
    theirs = [ours[0].clone()]
    adam, reference = Adam(ours, lr=0.5), torch.optim.Adam(theirs, lr=0.5)
    for step in range(12):
        g = torch.randn(64, generator=gen, dtype=dtype)
        g[:16] = 0.0
        g[16:32] *= tiny ** 0.5 * 1e-3  # squares below the smallest normal number
        g[32:40] = tiny * 0.5  # a subnormal gradient
        ours[0].grad, theirs[0].grad = g.clone(), g.clone()
        adam.step()
        reference.step()
        assert torch.equal(ours[0], theirs[0]), step


def test_a_parameter_without_a_gradient_does_not_move():
    p = torch.ones(3)
    Adam([p], lr=0.1).step()
    assert torch.equal(p, torch.ones(3))


def test_a_masked_step_freezes_the_masked_entries_and_moves_the_others_as_unmasked():
    gen = torch.Generator().manual_seed(1)
    start = torch.randn((4, 3), generator=gen)
    free, masked = start.clone(), start.clone()
    plain, frozen = Adam([free], lr=0.3), Adam([masked], lr=0.3)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(4, 1)
    for _ in range(5):
        g = torch.randn((4, 3), generator=gen)
        free.grad, masked.grad = g.clone(), g.clone()
        plain.step()
        frozen.step(mask=mask)
    assert torch.equal(masked[1], start[1]) and torch.equal(masked[3], start[3])
    torch.testing.assert_close(masked[0::2], free[0::2], rtol=1e-6, atol=1e-7)
