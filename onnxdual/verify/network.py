"""Loading a network for verification: the torch module, its onnxruntime reference session (the semantics
for counterexamples) and its interface, composed from the frontend (reading, the opset policy, the graph
rewrites VNN-COMP networks need, the reference session), with two checks at load time (the conversion agrees
with onnxruntime on a batch; the dual network can be built)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from onnxdual.engine.network import DualNetwork
from onnxdual.errors import ModelLoadError, OnnxDualError, UnboundedRelaxationError, UnsupportedOpsError
from onnxdual.frontend.onnx_import import load, missing_duals
from onnxdual.frontend.opset import downgrade, opset_of
from onnxdual.frontend.reader import interface, read_model_and_bytes
from onnxdual.frontend.reference import ReferenceSession
from onnxdual.frontend.rewrites import add_batch_axis, batch_vector_matmuls, constants_to_initializers
from onnxdual.verify.result import QueryError


@dataclass
class Network:
    """A network ready for verification: the torch module (:func:`onnxdual.load`), its onnxruntime session
    (the reference semantics for counterexamples), and its interface.

    ``input_shape`` is the shape fed to onnxruntime (symbolic dimensions set to 1); ``example_shape`` the
    per-example shape of the torch module (``input_shape[1:]`` when the first dimension is a batch of 1,
    else ``input_shape`` with a batch dimension added in front)."""

    net: nn.Module
    session: ReferenceSession  # onnxruntime's API (get_inputs, run) and evaluate(x)
    input_shape: tuple[int, ...]
    example_shape: tuple[int, ...]
    n_inputs: int
    n_outputs: int
    input_type: str  # ONNX element type name, e.g. "float"
    output_type: str
    opset: int
    source: str = "<model>"
    input_name: str = "input"


def load_network(path: str | os.PathLike, *, check: bool = True) -> Network:
    """Load an ONNX network (``.onnx`` or gzip-compressed) for :class:`Verifier`.

    Raises :class:`ModelLoadError` (unreadable, several inputs/outputs, not float32, torch conversion that
    disagrees with onnxruntime) and :class:`~onnxdual.errors.UnsupportedOpsError` (every operator without a
    dual layer). With ``check`` the dual structure is built once so that unsupported uses of supported
    operators are reported here rather than during verification."""
    source = str(path)
    model, data = read_model_and_bytes(path, detail=False)
    face = interface(model)
    if face.n_inputs != 1 or face.n_outputs != 1:
        raise ModelLoadError(f"{source}: onnxdual verifies networks with exactly one input and one output "
                             f"(this one has {face.n_inputs} inputs and {face.n_outputs} outputs)")
    session = ReferenceSession(data, source)
    if face.input_type != "float" or face.output_type != "float":
        raise QueryError(f"{source}: onnxdual analyses float32 networks; this one maps {face.input_type} to "
                         f"{face.output_type}", condition=3)
    missing = missing_duals(model)  # every operator without a dual layer, before any rewriting
    if missing:
        raise UnsupportedOpsError(missing)
    shape = face.input_shape
    model = downgrade(constants_to_initializers(model))  # onnxdual.load writes auto_pad out
    # the first dimension is a batch of 1 when it can be (as in VNN-COMP files); otherwise (or if that
    # interpretation does not compute onnxruntime's function) a batch dimension is added in front
    modes = [True, False] if len(shape) >= 2 and shape[0] == 1 else [False]
    first_error = None
    for leading_batch in modes:
        example_shape = shape[1:] if leading_batch else shape
        candidate = model if leading_batch else add_batch_axis(batch_vector_matmuls(model))
        net = load(candidate)
        try:
            n_out = _check_conversion(net, session, shape, example_shape, source)
            if check:
                _check_dual(net, shape, example_shape, n_out, source)
        except UnsupportedOpsError:
            raise
        except OnnxDualError as exc:
            first_error = first_error or exc
            continue
        return Network(net, session, shape, tuple(example_shape), math.prod(shape), n_out, face.input_type,
                       face.output_type, opset_of(model, ""), source, session.input_name)
    raise first_error


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def _check_conversion(net: nn.Module, session: ReferenceSession, shape: tuple[int, ...],
                      example_shape: tuple[int, ...], source: str) -> int:
    """The torch module must compute onnxruntime's outputs, also for a batch of inputs. Returns the number
    of outputs."""
    rng = np.random.default_rng(0)  # positive, mixed and wide probes: ReLUs must not hide a wrong layout
    probes = np.stack([rng.uniform(0.2, 1.2, size=shape), rng.uniform(-1.0, 1.0, size=shape),
                       rng.normal(0.0, 3.0, size=shape)]).astype(np.float32)
    try:
        ref = np.stack([np.asarray(session.evaluate(p), dtype=np.float64).reshape(-1) for p in probes])
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source}: onnxruntime fails on an input of shape {list(shape)}: "
                             f"{str(exc).splitlines()[0]}") from None
    try:
        with torch.no_grad():
            got = net(torch.from_numpy(probes).reshape(3, *example_shape)).double().reshape(3, -1).numpy()
    except Exception as exc:  # noqa: BLE001 - reported as a load error
        raise ModelLoadError(f"{source}: the network cannot be evaluated on a batch of inputs of shape "
                             f"{list(shape)} after conversion ({type(exc).__name__}: {_first_line(exc)})"
                             ) from None
    # NaN where both are NaN (a probe outside the function's domain: Pow(x, -0.5) of a negative x) agrees
    scale = 1.0 + np.nanmax(np.abs(ref), initial=0.0)
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale, equal_nan=True):
        raise ModelLoadError(f"{source}: the torch conversion of the network disagrees with onnxruntime on a "
                             "batch of inputs; it cannot be verified")
    return int(ref.shape[1])


def _check_dual(net: nn.Module, shape: tuple[int, ...], example_shape: tuple[int, ...], n_out: int,
                source: str) -> None:
    """Build the dual network and bound a tiny batch: unsupported uses of supported operators (``Mul`` of
    two variables, ...) are reported now, as :class:`OnnxDualError`, instead of during verification. A
    node without finite bounds at the tiny box (a divisor around 0) is retried at a positive one and then
    left to the property's own boxes (:class:`UnboundedRelaxationError` is about bounds, not the network)."""
    for centre in (0.0, 0.5):
        x = torch.full((2, *example_shape), centre)
        radius = torch.zeros_like(x).reshape(2, -1)
        radius[:, 0] = 1e-3
        try:
            dual = DualNetwork(net, x, radius.reshape(x.shape))
            with torch.no_grad():
                dual.lower_bound(torch.eye(n_out).expand(2, -1, -1)[:, :2].contiguous())
            return
        except UnboundedRelaxationError:
            continue
        except OnnxDualError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as a load error
            raise ModelLoadError(f"{source}: the dual network cannot be computed for this network "
                                 f"({type(exc).__name__}: {_first_line(exc)})") from None
