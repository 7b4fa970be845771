"""ONNX tensors as bytes: the serialised ``TensorProto`` the VNN-LIB 2.0 standard uses for assignments."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper


def tensor_proto_bytes(values: np.ndarray, name: str) -> bytes:
    """``values`` (dtype and shape as given) serialised as an ONNX ``TensorProto`` named ``name``."""
    return numpy_helper.from_array(values, name=name).SerializeToString()
