"""The tighter relaxations (``relaxation="adaptive"`` and ``"optimized"``): sound on random networks against
the MILP oracle, sampling and PGD; ordered ``paper <= adaptive <= optimized`` entry by entry; equal to
auto_LiRPA's CROWN and at least as tight as its alpha-CROWN on the reference models; deterministic; float64;
the network's weights untouched."""

import numpy as np
import pytest
import torch

import onnxdual
from onnxdual.engine.optimize import OptimizeOptions
from tests.conftest import shared_path
from tests.oracles.fixtures import torch_one_thread  # noqa: F401  (fixture)
from tests.oracles.harness import assert_clean, check_box_case, random_box_case, random_large_case, run_engine
from tests.milp_oracle import random_dense

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: few iterations keep the suite fast; the soundness argument does not depend on how many
FAST = OptimizeOptions(iterations=4, intermediate_iterations=2)

#: per relaxation: random box cases (dense, conv, residual, batch norm + pooling, structured families)
N_CASES = 120


@pytest.mark.parametrize("relaxation", ["adaptive", "optimized"])
@pytest.mark.parametrize("seed", range(N_CASES))
def test_bound_is_sound_on_random_boxes(relaxation, seed):
    case = random_box_case(seed)
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net, relaxation=relaxation, optimize=FAST)
    report = check_box_case(case, lb, bounds, net)
    assert_clean(report, case)
    assert report.milp_checks == sum(len(r) for r in case.milp_rows)


@pytest.mark.parametrize("relaxation", ["adaptive", "optimized"])
@pytest.mark.parametrize("seed", range(1, 30, 2))
def test_bound_is_sound_on_larger_networks(relaxation, seed):
    case = random_large_case(seed, "linf")
    net = onnxdual.load(case.net.model)
    lb, bounds = run_engine(case, net, relaxation=relaxation, optimize=FAST)
    assert_clean(check_box_case(case, lb, bounds, net, use_milp=False), case)


@pytest.mark.parametrize("seed", range(40))
def test_paper_adaptive_optimized_are_ordered_entry_by_entry(seed):
    """Adaptive is the paper's dual with better lower-face multipliers where it matters most; optimized
    starts there. On random networks adaptive is almost always tighter; optimized is never looser than
    adaptive (its iteration 0 is adaptive)."""
    case = random_box_case(seed)
    net = onnxdual.load(case.net.model)
    lbs = {mode: run_engine(case, net, relaxation=mode, optimize=OptimizeOptions(iterations=8))[0]
           for mode in ("paper", "adaptive", "optimized")}
    assert (lbs["optimized"] >= lbs["adaptive"]).all()
    # CROWN's choice can lose to the chord on single entries; only the ordering of its optimum is a theorem
    assert (lbs["optimized"] >= lbs["paper"] - 1e-5 * (1 + np.abs(lbs["paper"]))).mean() > 0.9


def test_optimized_tightens_where_adaptive_is_loose():
    """A case where optimisation must move: the bound improves, so the optimiser is not a no-op."""
    gains = []
    for seed in range(12):
        case = random_large_case(seed, "linf")
        net = onnxdual.load(case.net.model)
        a = run_engine(case, net, relaxation="adaptive")[0]
        o = run_engine(case, net, relaxation="optimized", optimize=OptimizeOptions(iterations=15))[0]
        gains.append(float((o - a).max()))
    assert max(gains) > 1e-3


def test_every_mode_is_deterministic_and_leaves_the_weights_alone():
    case = random_large_case(3, "linf")
    net = onnxdual.load(case.net.model)
    for mode in ("adaptive", "optimized"):
        first = run_engine(case, net, relaxation=mode, optimize=FAST)
        second = run_engine(case, net, relaxation=mode, optimize=FAST)
        assert np.array_equal(first[0], second[0])
    assert all(p.grad is None for p in net.parameters())


def test_the_weights_are_constants_while_optimising_and_trainable_afterwards():
    """The ascent moves only the face parameters: the weights need no gradient inside it, and they get
    their flag back afterwards, also when the ascent is interrupted, so robust training still works."""
    case = random_large_case(5, "linf")
    net = onnxdual.load(case.net.model)
    x, c = torch.from_numpy(case.x), torch.from_numpy(case.c)
    dual = onnxdual.DualNetwork(net, x, 0.05, relaxation="optimized", optimize=FAST)
    weights = dual.built.weights()
    assert {id(p) for p in net.parameters()} <= {id(w) for w in weights}
    seen = []

    def stop() -> bool:  # asked at every step of the adaptive pass, then before every iteration
        seen.append(any(w.requires_grad for w in weights))
        if seen.count(False) == 2:  # in the ascent's second iteration
            raise KeyboardInterrupt
        return False

    interrupted = onnxdual.DualNetwork(net, x, 0.05, relaxation="optimized",
                                       optimize=OptimizeOptions(iterations=5, stop=stop))
    with pytest.raises(KeyboardInterrupt):
        interrupted.lower_bound(c)
    assert seen[0] and seen[-2:] == [False, False]
    assert all(w.requires_grad for w in weights)
    dual.lower_bound(c)
    assert all(w.requires_grad for w in weights) and all(p.grad is None for p in net.parameters())
    onnxdual.robust_loss(net, 0.05, x, torch.zeros(x.shape[0], dtype=torch.long))[0].backward()
    assert all(p.grad is not None for p in net.parameters())


def test_optimised_chunks_fit_the_budget_and_give_each_example_its_own_bound(monkeypatch):
    """The batch is optimised in chunks whose per-row parameters fit the memory budget, each chunk warm-started
    from its own adaptive pass: every chunk fits, and every example gets the bound it gets alone (examples
    do not interact; only the chunking changes)."""
    from onnxdual.engine import network, optimize

    case = random_large_case(4, "linf")
    net = onnxdual.load(case.net.model).double()
    x, c = torch.from_numpy(case.x).double(), torch.from_numpy(case.c).double()
    assert x.shape[0] >= 3
    alone = torch.cat([onnxdual.DualNetwork(net, x[i:i + 1], 0.05, relaxation="optimized", optimize=FAST)
                       .lower_bound(c[i:i + 1]) for i in range(x.shape[0])])
    probe = onnxdual.DualNetwork(net, x, 0.05, relaxation="adaptive")
    probe.lower_bound(c)
    per_example = optimize.examples_per_optimization(probe.built, probe._ensure_pass()[0][1], c.shape[1], 8,
                                                     OptimizeOptions(memory_budget=1 << 30))
    budget = (1 << 30) // per_example * 2  # about two examples per chunk
    chunks = []
    real = network.optimized_bound

    def recording(built, input_set, base, ci, options, inner):
        chunks.append((ci.shape[0], optimize.examples_per_optimization(built, base, ci.shape[1], 8, options)))
        return real(built, input_set, base, ci, options, inner)

    monkeypatch.setattr(network, "optimized_bound", recording)
    options = OptimizeOptions(iterations=4, intermediate_iterations=2, memory_budget=budget)
    together = onnxdual.DualNetwork(net, x, 0.05, relaxation="optimized", optimize=options).lower_bound(c)
    assert sum(n for n, _ in chunks) == x.shape[0] and len(chunks) >= 2
    assert all(n <= fits for n, fits in chunks)
    torch.testing.assert_close(together, alone, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["dense with skips", "residual with a constant MatMul"])
def test_float64_networks_give_float64_bounds(kind):
    """Also where a node's module has no parameters of its own (a MatMul with a constant operand): its
    offset takes the dtype of its constants."""
    if kind == "dense with skips":
        model = random_dense(np.random.default_rng(4), 5, [12, 12], 3, skip=True).onnx_model
        x, c = torch.rand(2, 5), torch.randn(2, 3, 3)
    else:
        case = random_large_case(4, "linf")
        model, x, c = case.net.model, torch.from_numpy(case.x), torch.from_numpy(case.c)
    net32, net64 = onnxdual.load(model), onnxdual.load(model).double()
    for mode in ("adaptive", "optimized"):
        lb32 = onnxdual.DualNetwork(net32, x, 0.05, relaxation=mode, optimize=FAST).lower_bound(c)
        lb64 = onnxdual.DualNetwork(net64, x.double(), 0.05, relaxation=mode, optimize=FAST).lower_bound(c.double())
        assert lb64.dtype == torch.float64
        torch.testing.assert_close(lb64.float(), lb32, rtol=1e-3, atol=1e-3)


def test_bad_relaxation_options_are_user_errors():
    case = random_large_case(1, "linf")
    net = onnxdual.load(case.net.model)
    x = torch.from_numpy(case.x)
    with pytest.raises(onnxdual.InvalidInputError, match="relaxation"):
        onnxdual.DualNetwork(net, x, 0.1, relaxation="tight")
    with pytest.raises(onnxdual.InvalidInputError, match="projections"):
        onnxdual.DualNetwork(net, x, 0.1, proj=5, relaxation="adaptive")
    with pytest.raises(ValueError):
        OptimizeOptions(iterations=-1)


def test_the_optimised_bound_stays_differentiable_in_its_objective():
    """verify's row-weight ascent differentiates the bound in ``C``."""
    case = random_large_case(7, "linf")
    net = onnxdual.load(case.net.model)
    c = torch.from_numpy(case.c).clone().requires_grad_(True)
    dual = onnxdual.DualNetwork(net, torch.from_numpy(case.x), 0.05, relaxation="optimized", optimize=FAST)
    (grad,) = torch.autograd.grad(dual.lower_bound(c).sum(), c)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# -- the reference models: auto_LiRPA's CROWN and alpha-CROWN --------------------------------------------
def _reference(model: str, eps: float, method: str):
    folder = shared_path("reference")
    net = onnxdual.load(folder / "models" / f"{model}.onnx")
    x = torch.load(folder / "models" / "inputs_1x28x28.pt")[:16]
    ref = torch.load(folder / "auto_lirpa" / f"bounds_{model}_eps{eps}_{method}.pt")
    y = ref["y"]
    eye = torch.eye(10)
    c = torch.stack([torch.stack([eye[y[b]] - eye[j] for j in range(10) if j != y[b]]) for b in range(16)])
    return net, x, c, ref["lb"]


@pytest.mark.parametrize("model", ["mnist_fc_256x2", "mnist_small"])
@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_adaptive_equals_auto_lirpa_crown(model, eps):
    net, x, c, ref = _reference(model, eps, "CROWN")
    with torch.no_grad():
        lb = onnxdual.DualNetwork(net, x, eps, relaxation="adaptive").lower_bound(c)
    assert (lb - ref).abs().max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("model,eps", [("mnist_fc_256x2", 0.01), ("mnist_fc_256x2", 0.1),
                                       ("mnist_small", 0.01), ("mnist_small", 0.1)])
def test_optimized_is_at_least_as_tight_as_auto_lirpa_alpha_crown(model, eps):
    net, x, c, ref = _reference(model, eps, "alphaCROWN")
    if model == "mnist_small":  # the conv model is costly: a few inputs keep the suite fast (the
        x, c, ref = x[:2], c[:2], ref[:2]  # benchmark, benchmarks/bounds/, runs all 16)
    lb = onnxdual.DualNetwork(net, x, eps, relaxation="optimized").lower_bound(c).detach()
    assert lb.min(1).values.mean() >= ref.min(1).values.mean()
    assert (lb >= ref - 1e-3).all()


def test_exact_robust_training_may_use_the_adaptive_faces():
    model = random_dense(np.random.default_rng(2), 5, [12, 12], 3).onnx_model
    net = onnxdual.load(model)
    x, y = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    paper, _ = onnxdual.robust_loss(net, 0.1, x, y)
    adaptive, _ = onnxdual.robust_loss(net, 0.1, x, y, relaxation="adaptive")
    grads = torch.autograd.grad(adaptive, list(net.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert torch.isfinite(paper) and not torch.equal(adaptive, paper)  # a different (CROWN) bound
    with pytest.raises(onnxdual.InvalidInputError):
        onnxdual.robust_loss(net, 0.1, x, y, proj=5, relaxation="adaptive")
