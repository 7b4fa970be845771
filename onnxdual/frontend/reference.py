"""The reference semantics: an onnxruntime session of the original ONNX model, which decides whether a
counterexample is real (the torch conversion is only trusted after it agrees with this session)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from onnxdual.errors import ModelLoadError


class ReferenceSession:
    """onnxruntime on one CPU thread for serialised ONNX ``data``. :meth:`evaluate` runs it on a numpy
    input; ``get_inputs`` and ``run`` are onnxruntime's own API, for callers that feed it directly."""

    def __init__(self, data: bytes, source: str = "<model>"):
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 4  # fatal only: errors reach the user through the exception
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - reported as a load error
            raise ModelLoadError(f"{source}: onnxruntime cannot run it: {str(exc).splitlines()[0]}") from None
        self.input_name: str = self.session.get_inputs()[0].name

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """The model's first output on input ``x`` (fed as float32, in the model's input shape)."""
        return np.asarray(self.session.run(None, {self.input_name: np.asarray(x, dtype=np.float32)})[0])

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, output_names, feed):
        return self.session.run(output_names, feed)
