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
"""

from onnxdual.duals.base import (ActivationDual, AffineDual, DualLayer, ElementwiseActivation, ElementwiseFace,
                                 Face, Faces, LinearRelaxation, NodeContext, ParametricFaces, Relaxation,
                                 RelaxationFace, SlopeFaces, piecewise_linear_relaxation)
from onnxdual.engine.input_sets import Box, InputSet, L2Ball
from onnxdual.engine.network import (DualNetwork, Estimate, IntervalBounds, ProbableBound, margin_matrix,
                                     robust_loss)
from onnxdual.errors import (InvalidInputError, ModelLoadError, OnnxDualError, PluginLoadError,
                             UnsupportedOpsError)
from onnxdual.frontend.onnx_import import load

__version__ = "0.1.0"

__all__ = [
    "load", "DualNetwork", "robust_loss", "margin_matrix", "Estimate", "IntervalBounds", "ProbableBound",
    "Box", "L2Ball", "InputSet",
    "DualLayer", "AffineDual", "ActivationDual", "ElementwiseActivation", "NodeContext", "Relaxation",
    "LinearRelaxation", "Face", "ElementwiseFace", "RelaxationFace", "Faces", "ParametricFaces", "SlopeFaces",
    "piecewise_linear_relaxation",
    "OnnxDualError", "ModelLoadError", "InvalidInputError", "PluginLoadError", "UnsupportedOpsError",
]
