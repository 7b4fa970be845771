"""frontend.convert and the NodeContext it feeds: constant inputs by ONNX position, read from the converted
module's live tensors (training reaches them), Clip limits from attributes or inputs by opset; the opset
policy and the reference session."""

import numpy as np
import pytest
import torch
from onnx import helper

import onnxdual
from onnxdual.engine.build import build_dual
from onnxdual.frontend import supported_opsets, versions
from onnxdual.frontend.opset import CONVERT_OPSET, MIN_OPSET, UPGRADE_OPSET
from onnxdual.frontend.reference import ReferenceSession
from tests.dual_checks import check_dual
from tests.onnx_builders import make_model, run_ort


def _contexts(net, x):
    return {s.node.info.op_type: s.layer.ctx for s in build_dual(net, x).steps}


def test_weights_are_the_live_tensors_of_the_converted_module():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["input", "W", "b"], ["c"], pads=[0, 1, 1, 0]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("Gemm", ["f", "G"], ["output"])]
    inits = {"W": rng.normal(size=(2, 1, 2, 2)).astype(np.float32), "b": np.zeros(2, np.float32),
             "s": np.ones(2, np.float32), "o": np.zeros(2, np.float32), "m": np.zeros(2, np.float32),
             "v": np.ones(2, np.float32), "G": rng.normal(size=(18, 3)).astype(np.float32)}
    model = make_model(nodes, [1, 3, 3], [3], inits)
    net = onnxdual.load(model)
    x = torch.zeros(1, 1, 3, 3)
    ctx = _contexts(net, x)
    params = {id(t) for t in list(net.parameters()) + list(net.buffers())}
    conv, bn, gemm = ctx["Conv"], ctx["BatchNormalization"], ctx["Gemm"]
    assert id(conv.inputs[1]) in params and torch.equal(conv.inputs[1], torch.from_numpy(inits["W"]))
    assert conv.inputs[0] is None and conv.variable_positions == (0,)
    assert id(bn.inputs[1]) in params and id(bn.inputs[4]) in params and bn.inputs[1] is not bn.inputs[4]
    assert torch.equal(gemm.inputs[1], torch.from_numpy(inits["G"]))  # ONNX layout (transB = 0)
    assert gemm.inputs[1]._base is not None and id(gemm.inputs[1]._base) in params  # a view of the weight
    loss, _ = onnxdual.robust_loss(net, 0.1, torch.rand(2, 1, 3, 3), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    check_dual(model, np.random.default_rng(1).uniform(-1, 1, size=(2, 1, 3, 3)).astype(np.float32), eps=0.2,
               exact=True)


@pytest.mark.parametrize("opset,limits", [(6, {"min": -0.5, "max": 0.5}), (11, (-0.5, 0.5)), (13, (None, 0.5)),
                                          (13, (0.0, None)), (13, (0.0, 6.0)), (13, (None, None))])
def test_clip_limits_come_from_the_onnx_node(opset, limits):
    if isinstance(limits, dict):
        node, inits = helper.make_node("Clip", ["input"], ["output"], **limits), {}
        low, high = limits["min"], limits["max"]
    else:
        low, high = limits
        names = ["input", "lo" if low is not None else "", "hi" if high is not None else ""]
        while names[-1] == "":
            names.pop()
        inits = {k: np.array(v, np.float32) for k, v in (("lo", low), ("hi", high)) if v is not None}
        node = helper.make_node("Clip", names, ["output"])
    model = make_model([node], [4], [4], inits, opset=opset)
    x = np.array([[-2.0, -0.25, 0.25, 7.0]], np.float32)
    net, lower, upper = check_dual(model, x, eps=0.5)
    ctx = _contexts(net, torch.from_numpy(x))["Clip"]
    assert ctx.since_version == {6: 6, 11: 11, 13: 13}[opset]
    kinks = build_dual(net, torch.from_numpy(x)).steps[0].layer.kinks
    expected = [k for k in ((-np.inf if low is None and high is not None and opset >= 11 else low), high)
                if k is not None]
    assert list(kinks) == pytest.approx(expected)


def test_opset_policy_and_versions():
    assert (MIN_OPSET, UPGRADE_OPSET, CONVERT_OPSET) == (7, 13, 17)
    low, high = supported_opsets()
    assert low == MIN_OPSET and high >= CONVERT_OPSET
    assert set(versions()) == {"onnx", "onnx2torch"}


def test_reference_session_evaluates_numpy_inputs():
    model = make_model([helper.make_node("Relu", ["input"], ["output"])], [3], [3])
    session = ReferenceSession(model.SerializeToString())
    x = np.array([[-1.0, 0.0, 2.0]], np.float64)
    assert np.array_equal(session.evaluate(x), run_ort(model, x))
    assert session.input_name == session.get_inputs()[0].name == "input"
    with pytest.raises(onnxdual.ModelLoadError, match="onnxruntime cannot run it"):
        ReferenceSession(b"garbage", "g.onnx")
