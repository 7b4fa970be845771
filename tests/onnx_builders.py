"""Helpers to build tiny ONNX models in tests (one node, or a few) and run them in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, input_shape, output_shape, initializers=(), opset=17, input_name="input",
               output_name="output") -> onnx.ModelProto:
    """A model with one float input (dynamic batch 'N') and one float output."""
    graph = helper.make_graph(
        list(nodes), "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", *output_shape])],
        [numpy_helper.from_array(np.asarray(v), name=k) for k, v in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 18 else 9  # opsets 19-20 (Gelu) need IR 9
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def conv_maxpool_model(rng: np.random.Generator, relu_output: bool = False) -> onnx.ModelProto:
    """Conv 3x3 (3 filters, pad 1) -> Relu -> MaxPool 2x2 -> Flatten -> Gemm (4 outputs) [-> Relu] on
    (1, 6, 6) inputs: the MaxPool plugin inside a small convolutional network."""
    k = (rng.normal(size=(3, 1, 3, 3)) * 0.6).astype(np.float32)
    w = (rng.normal(size=(4, 27)) / 5).astype(np.float32)
    last = "g" if relu_output else "output"
    nodes = [helper.make_node("Conv", ["input", "K"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W"], [last], transB=1)]
    if relu_output:
        nodes.append(helper.make_node("Relu", ["g"], ["output"]))
    return make_model(nodes, [1, 6, 6], [4], {"K": k, "W": w})
