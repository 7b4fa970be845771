"""onnxdual: provable robustness for ONNX networks.

Implements Wong, Schmidt, Metzen & Kolter, *Scaling provable adversarial defenses* (NeurIPS 2018):
modular dual layers, AutoDual, random projections and cascades, for any ONNX network whose operators have
a registered dual layer.

The stable public API::

    net = onnxdual.load("model.onnx")                      # torch module, output equals onnxruntime's
    dual = onnxdual.DualNetwork(net, x, eps=0.1)           # nothing is computed yet
    lb = dual.lower_bound(C)                               # (batch, m) sound lower bounds of C f(x')
    pb = dual.probable_lower_bound(C, delta=0.01)          # holds with probability >= 0.99 (App. E)
    loss, err = onnxdual.robust_loss(net, 0.1, x, y, proj=50)
    result = onnxdual.certify(net, x, y, eps=[0.05, 0.1])   # result.summary, result.examples: DataFrames

Everywhere a loaded network is accepted, a plain torch module is too (exported to ONNX for inputs shaped
like ``x`` and loaded back: ``onnxdual.DualNetwork(nn.Sequential(...), x, eps)``).
"""

import importlib
from typing import TYPE_CHECKING, Any

#: each public name and the module that defines it, imported on first use (PEP 562): ``import onnxdual`` (and
#: every ``import onnxdual.<module>``, which runs this file first) must not pay for torch and onnx -- the
#: command line's ``onnxdual --help`` and error paths need neither. A name that is a subpackage
#: (``certify``) maps to itself.
_PUBLIC = {
    "ActivationDual": "onnxdual.duals.base",
    "AffineDual": "onnxdual.duals.base",
    "DualLayer": "onnxdual.duals.base",
    "ElementwiseActivation": "onnxdual.duals.base",
    "ElementwiseFace": "onnxdual.duals.base",
    "Face": "onnxdual.duals.base",
    "Faces": "onnxdual.duals.base",
    "LinearRelaxation": "onnxdual.duals.base",
    "NodeContext": "onnxdual.duals.base",
    "ParametricFaces": "onnxdual.duals.base",
    "Relaxation": "onnxdual.duals.base",
    "RelaxationFace": "onnxdual.duals.base",
    "SlopeFaces": "onnxdual.duals.base",
    "piecewise_linear_relaxation": "onnxdual.duals.base",
    "certify": "onnxdual.certify",
    "CertifyResult": "onnxdual.certify.run",
    "CertifySettings": "onnxdual.certify.run",
    "Box": "onnxdual.engine.input_sets",
    "InputSet": "onnxdual.engine.input_sets",
    "L2Ball": "onnxdual.engine.input_sets",
    "DualNetwork": "onnxdual.engine.network",
    "Estimate": "onnxdual.engine.network",
    "IntervalBounds": "onnxdual.engine.network",
    "ProbableBound": "onnxdual.engine.network",
    "margin_matrix": "onnxdual.engine.network",
    "robust_loss": "onnxdual.engine.network",
    "InvalidInputError": "onnxdual.errors",
    "ModelLoadError": "onnxdual.errors",
    "OnnxDualError": "onnxdual.errors",
    "PluginLoadError": "onnxdual.errors",
    "UnsupportedOpsError": "onnxdual.errors",
    "load": "onnxdual.frontend.onnx_import",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxdual' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module == f"onnxdual.{name}" else getattr(loaded, name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from onnxdual.duals.base import (ActivationDual, AffineDual, DualLayer, ElementwiseActivation,
                                     ElementwiseFace, Face, Faces, LinearRelaxation, NodeContext,
                                     ParametricFaces, Relaxation, RelaxationFace, SlopeFaces,
                                     piecewise_linear_relaxation)
    from onnxdual import certify  # the package is callable: onnxdual.certify(model, x, y, eps, ...)
    from onnxdual.certify.run import CertifyResult, CertifySettings
    from onnxdual.engine.input_sets import Box, InputSet, L2Ball
    from onnxdual.engine.network import (DualNetwork, Estimate, IntervalBounds, ProbableBound, margin_matrix,
                                         robust_loss)
    from onnxdual.errors import (InvalidInputError, ModelLoadError, OnnxDualError, PluginLoadError,
                                 UnsupportedOpsError)
    from onnxdual.frontend.onnx_import import load

__version__ = "0.1.0"

__all__ = [
    "load", "DualNetwork", "robust_loss", "margin_matrix", "certify", "CertifyResult", "CertifySettings", "Estimate", "IntervalBounds", "ProbableBound",
    "Box", "L2Ball", "InputSet",
    "DualLayer", "AffineDual", "ActivationDual", "ElementwiseActivation", "NodeContext", "Relaxation",
    "LinearRelaxation", "Face", "ElementwiseFace", "RelaxationFace", "Faces", "ParametricFaces", "SlopeFaces",
    "piecewise_linear_relaxation",
    "OnnxDualError", "ModelLoadError", "InvalidInputError", "PluginLoadError", "UnsupportedOpsError",
]
