"""The frontend owns every ONNX read, rewrite, opset decision and onnx2torch call; nothing outside it imports
``onnx``, ``onnxruntime`` or ``onnx2torch``. Its rooms:

* :mod:`~onnxdual.frontend.reader` -- file bytes (plain or gzip), parsing and checking, graph facts;
* :mod:`~onnxdual.frontend.opset` -- THE opset policy (oldest/upgrade/convert opsets) and schema versions;
* :mod:`~onnxdual.frontend.folding` -- constant folding: values independent of the input's values become
  initializers (exporters' shape arithmetic);
* :mod:`~onnxdual.frontend.rewrites` -- graph rewrites before conversion (batch axis, pads, Split, ...);
* :mod:`~onnxdual.frontend.convert` -- onnx2torch, and the per-node ONNX information the dual layers read;
* :mod:`~onnxdual.frontend.onnx_import` -- ``onnxdual.load``, composed from the above;
* :mod:`~onnxdual.frontend.graph` -- the engine's DAG view of a loaded module;
* :mod:`~onnxdual.frontend.reference` -- the onnxruntime reference session (replays counterexamples);
* :mod:`~onnxdual.frontend.torchvision_compat` -- lets onnx2torch import next to a broken torchvision.
"""

import importlib
from typing import TYPE_CHECKING, Any

#: the package's names, imported on first use (PEP 562): ``import onnxdual.frontend.opset`` runs this file
#: first, and ``onnxdual supports --onnx-opset-versions`` needs onnx but not torch and onnx2torch (convert)
_NAMES = {"supported_opsets": "onnxdual.frontend.opset", "versions": "onnxdual.frontend.convert"}


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxdual.frontend' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from onnxdual.frontend.convert import versions
    from onnxdual.frontend.opset import supported_opsets

__all__ = ["supported_opsets", "versions"]
