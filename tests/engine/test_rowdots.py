"""engine/rowdots: the per-row dot products of the dual objective and their hand-written gradients."""

import pytest
import torch

from onnxdual.engine.rowdots import row_dot, row_terms

# (rows' batch, c's batch, r's batch): equal batches, vectors shared by the batch, rows shared by the batch
BATCHES = [(3, 3, 3), (3, 1, 1), (3, 1, 3), (3, 3, 1), (1, 3, 3)]


def _draw(bf, bc, br):
    gen = torch.Generator().manual_seed(bf * 100 + bc * 10 + br)
    flat = torch.randn(bf, 4, 6, generator=gen, dtype=torch.float64)
    flat[0, 0, 0] = 0.0  # |nu|'s gradient at 0 is 0, as abs's own
    c = torch.randn(bc, 6, generator=gen, dtype=torch.float64)
    r = torch.rand(br, 6, generator=gen, dtype=torch.float64)
    return [t.requires_grad_() for t in (flat, c, r)]


@pytest.mark.parametrize("batches", BATCHES)
def test_values_are_the_plain_products(batches):
    flat, c, r = _draw(*batches)
    lin, spread = row_terms(flat, c, r)
    assert torch.equal(lin, (flat @ c.unsqueeze(-1)).squeeze(-1))
    assert torch.equal(spread, (flat.abs() @ r.unsqueeze(-1)).squeeze(-1))
    assert torch.equal(row_dot(flat, c), lin)


@pytest.mark.parametrize("batches", BATCHES)
def test_gradients_match_finite_differences(batches):
    flat, c, r = _draw(*batches)
    assert torch.autograd.gradcheck(row_terms, (flat, c, r))
    assert torch.autograd.gradcheck(row_dot, (flat, c))


def test_gradients_equal_autograds_own_with_one_output_used():
    flat, c, r = _draw(3, 1, 3)
    for pick in (0, 1):
        ours = torch.autograd.grad(row_terms(flat, c, r)[pick].sum(), (flat, c, r), allow_unused=True)
        plain = ((flat @ c.unsqueeze(-1)).squeeze(-1), (flat.abs() @ r.unsqueeze(-1)).squeeze(-1))[pick]
        theirs = torch.autograd.grad(plain.sum(), (flat, c, r), allow_unused=True)
        for a, b, t in zip(ours, theirs, (flat, c, r)):  # an unused input's gradient: None or zeros
            assert torch.allclose(torch.zeros_like(t) if a is None else a, torch.zeros_like(t) if b is None else b)
