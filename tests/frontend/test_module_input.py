"""A plain torch module wherever a loaded network is accepted: DualNetwork, robust_loss (gradients reach the
module), worst_margins; the bounds equal those of the module's own ONNX export loaded with onnxdual.load, the
module and torch's global state are left as they were, and the loaded network follows the module as it
trains."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import onnxdual
from onnxdual.certify.margins import worst_margins
from onnxdual.frontend.export import as_network, export_onnx_bytes, is_loaded
from onnxdual.frontend.reader import parse_model


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 6),
                         nn.ReLU(), nn.Linear(6, 3))


class ViewFlatten(nn.Module):
    """The paper's code flattens with ``x.view(x.size(0), -1)``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(3)
    return torch.rand(5, 1, 6, 6, generator=g), torch.tensor([0, 1, 2, 0, 1])


def loaded_export(module: nn.Module, shape) -> nn.Module:
    return onnxdual.load(parse_model(export_onnx_bytes(module, shape), "export"))


def test_bounds_of_a_module_equal_those_of_its_loaded_export(data):
    x, y = data
    module = cnn()
    c = onnxdual.margin_matrix(y, 3)
    got = onnxdual.DualNetwork(module, x, 0.05, clip=(0, 1)).lower_bound(c)
    want = onnxdual.DualNetwork(loaded_export(module, (1, 6, 6)), x, 0.05, clip=(0, 1)).lower_bound(c)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got).all() and (got[torch.arange(5), :] <= 0).any()  # some margin not certified
    pred, margin = worst_margins(module, x, 0.05, clip=(0, 1))
    assert pred.shape == (5,) and torch.isfinite(margin).all()


def test_robust_loss_of_a_module_trains_the_module(data):
    x, y = data
    module = cnn()
    reference = loaded_export(module, (1, 6, 6))
    loss, err = onnxdual.robust_loss(module, 0.05, x, y)
    want_loss, want_err = onnxdual.robust_loss(reference, 0.05, x, y)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    assert float(err) == float(want_err)
    loss.backward()
    want_loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # the same gradient as the loaded export's (Gemm keeps Linear's weight as it is, transB=1)
    ref = dict(reference.named_parameters())
    conv_weight = next(t for n, t in ref.items() if n.endswith("weight") and t.dim() == 4)
    torch.testing.assert_close(grads["0.weight"], conv_weight.grad, rtol=1e-4, atol=1e-6)
    # one optimiser step moves the loaded network with the module (its tensors are the module's)
    torch.optim.SGD(module.parameters(), lr=0.5).step()
    after = onnxdual.robust_loss(module, 0.05, x, y)[0]
    fresh = onnxdual.robust_loss(loaded_export(module, (1, 6, 6)), 0.05, x, y)[0]
    torch.testing.assert_close(after, fresh, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after, loss)


def test_the_paper_view_flatten_module_is_accepted(data):
    x, y = data
    x = x[:, :, :4, :4].contiguous()
    module = ViewFlatten()
    loss, _ = onnxdual.robust_loss(module, 0.1, x, y)
    loss.backward()
    assert module.fc1.weight.grad is not None
    lb = onnxdual.DualNetwork(module, x, 0.0).lower_bound(onnxdual.margin_matrix(y, 3))
    with torch.no_grad():
        logits = module(x)
    exact = logits[torch.arange(5), y].unsqueeze(1) - logits  # eps 0: the bound is the margin itself
    torch.testing.assert_close(lb, exact, rtol=1e-4, atol=1e-4)


def test_no_side_effects_on_the_module_or_torch(data):
    x, y = data
    module = cnn().train()
    before = copy.deepcopy(module.state_dict())
    flags = [m.training for m in module.modules()]
    rng = torch.get_rng_state()
    with torch.no_grad():
        onnxdual.DualNetwork(module, x, 0.05).lower_bound(onnxdual.margin_matrix(y, 3))
    assert [m.training for m in module.modules()] == flags
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert not is_loaded(module)


def test_the_loaded_network_is_kept_and_remade_when_the_module_changes(data):
    x, _ = data
    module = cnn()
    first = as_network(module, x)
    assert is_loaded(first) and as_network(module, x[:2]) is first  # same input shape: kept
    assert as_network(first, x) is first
    module[6] = nn.Linear(6, 4)  # a replaced layer: made again, with the new output size
    second = as_network(module, x)
    assert second is not first and second(x).shape == (5, 4)


def test_an_untied_parameter_refuses_gradients_instead_of_training_nothing(data):
    x, y = data
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(36, 3, bias=False))  # exported as MatMul of a folded W^T
    with pytest.raises(onnxdual.InvalidInputError, match="gradients cannot reach"):
        onnxdual.robust_loss(module, 0.05, x, y)
    with torch.no_grad():  # bounds alone need no gradient
        loss, _ = onnxdual.robust_loss(module, 0.05, x, y)
    assert torch.isfinite(loss)
    module[1].weight.data.mul_(2)  # a copied parameter changed value: the network is made again
    with torch.no_grad():
        doubled = onnxdual.DualNetwork(module, x, 0.0).lower_bound(onnxdual.margin_matrix(y, 3))
        logits = module(x)
    exact = logits[torch.arange(5), y].unsqueeze(1) - logits
    torch.testing.assert_close(doubled, exact, rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_typed_errors(data):
    x, _ = data
    with pytest.raises(onnxdual.InvalidInputError):
        as_network("model.onnx", x)
    with pytest.raises(onnxdual.InvalidInputError):
        as_network(cnn(), torch.rand(36))
