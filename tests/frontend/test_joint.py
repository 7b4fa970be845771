"""The joint network of a VNN-LIB 2.0 query (onnxdual.frontend.joint): it computes exactly the declared
outputs, hidden nodes and product terms of the declared networks (against onnxruntime on each model), its
dual bounds are sound (sampled) and exact where the networks are affine, and models that do not fit the
declarations are refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdual.errors import ModelLoadError
from onnxdual.frontend.joint import joint_model
from onnxdual.specs.joint import JointLayout, JointNetwork, JointTensor
from tests.dual_checks import check_dual
from tests.onnx_builders import make_model, run_ort


def unbatched(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "u", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


W = np.array([[1.0, -2.0, 0.5], [0.25, 1.0, -1.0]], np.float32)
#: two inputs, a hidden node h = a + b, outputs relu(h * c) and a - b
TWO_IN = unbatched([helper.make_node("Add", ["a", "b"], ["h"]), helper.make_node("Mul", ["h", "c"], ["m"]),
                    helper.make_node("Relu", ["m"], ["y"]), helper.make_node("Sub", ["a", "b"], ["z"])],
                   [("a", [2]), ("b", [2])], [("y", [2]), ("z", [2])], {"c": [2.0, -1.0]})
#: one input of 3, y = W x
ONE_IN = unbatched([helper.make_node("MatMul", ["W", "x"], ["y"])], [("x", [3])], [("y", [2])], {"W": W})


def t(name, shape, onnx_name=None):
    return JointTensor(name, onnx_name, tuple(shape))


def layout(terms=()):
    f = JointNetwork("f", "f", (t("A", [2]), t("B", [2])), (t("H", [2], "h"),), (t("Y", [2]), t("Z", [2])))
    g = JointNetwork("g", "g", (t("X", [3]),), (), (t("U", [2]),))
    f2 = JointNetwork("f2", "f", (t("A2", [2], "a"), t("B2", [2], "b")), (), (t("Y2", [2], "y"),
                                                                              t("Z2", [2], "z")))
    return JointLayout((f, g, f2), terms)


def test_unbatched_joint_model_computes_every_declared_variable():
    # V = inputs (A 0-1, B 2-3, X 4-6, A2 7-8, B2 9-10), outputs (Y 11-12, Z 13-14, U 15-16, Y2 17-18,
    # Z2 19-20), hidden (H 21-22); terms: a copy of X[1], Y[0]*U[1], A[1]*A[1]*Z2[0]
    terms = ((5,), (11, 16), (1, 1, 19))
    model = joint_model(layout(terms), {"f": TWO_IN, "g": ONE_IN})
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    for _ in range(4):
        z = rng.normal(size=11).astype(np.float32)
        a, b, x, a2, b2 = z[0:2], z[2:4], z[4:7], z[7:9], z[9:11]
        y, zz = relu_of(a, b), a - b
        u = W @ x
        y2, z2 = relu_of(a2, b2), a2 - b2
        expected = np.concatenate([y, zz, u, y2, z2, a + b, [x[1], y[0] * u[1], a[1] * a[1] * z2[0]]])
        np.testing.assert_allclose(run_ort(model, z), expected, rtol=1e-6, atol=1e-6)


def relu_of(a, b):
    return np.maximum((a + b) * np.array([2.0, -1.0], np.float32), 0)


def test_batched_joint_model_is_sound_and_exact_where_affine():
    """Networks with a batch dimension: the joint input is [N, n]; the bounds of the joint network hold on
    samples, and are exact for affine networks and copies of inputs (no products)."""
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32)
    first = make_model([helper.make_node("Gemm", ["input", "W"], ["output"], transB=1)], [4], [3], {"W": w1})
    second = make_model([helper.make_node("Gemm", ["input", "W"], ["h"], transB=1),
                         helper.make_node("Relu", ["h"], ["output"])], [3], [2], {"W": w2})
    nets = (JointNetwork("p", "p", (t("X", [1, 4]),), (), (t("Y", [1, 3]),)),
            JointNetwork("q", "q", (t("U", [1, 3]),), (t("H", [1, 2], "h"),), (t("V", [1, 2]),)))
    x = rng.normal(size=(2, 7)).astype(np.float32)
    affine = joint_model(JointLayout(nets[:1], ((0,), (3,))), {"p": first})
    check_dual(affine, x[:, :4], eps=0.4, exact=True)
    with_products = joint_model(JointLayout(nets, ((3, 7), (9, 9, 10), (12,))), {"p": first, "q": second})
    check_dual(with_products, x, eps=0.4, samples=2048)


def test_models_that_do_not_fit_the_declarations_are_refused():
    g = JointNetwork("g", "g", (t("X", [3]),), (), (t("U", [2]),))
    with pytest.raises(ModelLoadError, match="declares 1 inputs but its model has 2"):
        joint_model(JointLayout((JointNetwork("f", "f", (t("A", [2]),), (), (t("Y", [2]),)),)), {"f": TWO_IN})
    with pytest.raises(ModelLoadError, match="input X has 4 elements"):
        joint_model(JointLayout((JointNetwork("g", "g", (t("X", [4]),), (), (t("U", [2]),)),)), {"g": ONE_IN})
    with pytest.raises(ModelLoadError, match="output U has 3 elements"):
        joint_model(JointLayout((JointNetwork("g", "g", (t("X", [3]),), (), (t("U", [3]),)),)), {"g": ONE_IN})
    with pytest.raises(ModelLoadError, match="'nowhere', which is not a tensor"):
        joint_model(JointLayout((JointNetwork("g", "g", (t("X", [3]),), (t("H", [1], "nowhere"),),
                                              (t("U", [2]),)),)), {"g": ONE_IN})
    batched = make_model([helper.make_node("Relu", ["input"], ["output"])], [2], [2])
    with pytest.raises(ModelLoadError, match="leading batch dimension or none"):
        joint_model(JointLayout((g, JointNetwork("b", "b", (t("X2", [1, 2]),), (), (t("Y2", [1, 2]),)))),
                    {"g": ONE_IN, "b": batched})
    old = unbatched([helper.make_node("Relu", ["x"], ["y"])], [("x", [3])], [("y", [3])], opset=13)
    with pytest.raises(ModelLoadError, match="share one opset"):
        joint_model(JointLayout((g, JointNetwork("o", "o", (t("X2", [3]),), (), (t("Y2", [3]),)))),
                    {"g": ONE_IN, "o": old})


def test_unbatched_joint_network_loads_for_verification_with_sound_bounds(tmp_path):
    """load_network gives the joint model of unbatched networks a batch axis: the module equals
    onnxruntime per example, and its dual bounds contain every sampled output."""
    import torch

    import onnxdual
    from onnxdual.verify import load_network

    path = tmp_path / "joint.onnx"
    onnx.save(joint_model(layout(((5,), (11, 16), (1, 1, 19))), {"f": TWO_IN, "g": ONE_IN}), str(path))
    network = load_network(path)
    centre = torch.tensor(np.random.default_rng(2).normal(size=(1, 11)), dtype=torch.float32)
    dual = onnxdual.DualNetwork(network.net, centre, 0.5)
    n = network.n_outputs
    c = torch.cat([torch.eye(n), -torch.eye(n)]).unsqueeze(0)
    with torch.no_grad():
        lb = dual.lower_bound(c)[0]
        pts = dual.input_set.sample(1024, torch.Generator().manual_seed(0)).flatten(0, 1)
        vals = network.net(pts)
    np.testing.assert_allclose(vals[:8].numpy(), np.stack([run_ort(network_model(path), p) for p in
                                                           pts[:8].numpy()]), rtol=1e-5, atol=1e-5)
    assert (vals >= lb[:n] - 1e-5).all() and (vals <= -lb[n:] + 1e-5).all()


def network_model(path) -> onnx.ModelProto:
    return onnx.load(str(path))
