"""Counterexample text in the formats the two VNN-LIB conventions expect.

* VNN-COMP (VNN-LIB 1.0): the result file holds the line ``sat`` followed by one s-expression list
  ``((X_0 v)\\n (X_1 v)\\n ...\\n (Y_0 v) ...)``, inputs first, then outputs, each index in order. The
  VNN-COMP scorer (2022+) reads it by splitting on parentheses and ``name value`` on a single space,
  then re-runs the network on ``X`` and compares with ``Y``.
* VNN-LIB 2.0 standard (chapter 5, the ``verify`` command): after the ``sat`` line, for each variable of
  the assignment (the network's input, then its output; for a 1.0 file the scalars ``X_i`` then ``Y_j``)
  a header line ``NAME TYPE [d1,d2,...]`` and then one value per line in row-major order
  (:func:`format_vnnlib2_assignment`); or, with ``--serialise-assignments DIR``, one serialised ONNX
  ``TensorProto`` per variable (:func:`serialise_assignment`).

Values are written with :func:`repr` of the float64 value: the shortest text that reads back to the
same double, so a float32 witness round-trips exactly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from onnxdual.errors import InvalidInputError
from onnxdual.files import atomic_write, prepare_dir
from onnxdual.specs.declarations import DeclaredNetwork, DeclaredVariable


def _values(v) -> list[float]:
    return [float(a) for a in np.asarray(v, dtype=np.float64).reshape(-1)]


def format_vnncomp_witness(x, y, *, with_status_line: bool = False) -> str:
    """VNN-COMP counterexample list ``((X_0 v) ... (Y_0 v) ...)`` for flat input ``x`` and output ``y``.
    With ``with_status_line`` the text starts with ``sat\\n`` (the whole result-file content).
    No trailing newline."""
    entries = [f"(X_{i} {v!r})" for i, v in enumerate(_values(x))]
    entries += [f"(Y_{j} {v!r})" for j, v in enumerate(_values(y))]
    body = "(" + "\n ".join(entries) + ")" if entries else "()"
    return "sat\n" + body if with_status_line else body


def _value_text(v: float) -> str:
    return repr(float(v))


def assignment_variables(prop, declared: list[DeclaredNetwork]) -> list[DeclaredVariable]:
    """The variables of a satisfying assignment in declaration order: the network's input then output
    (VNN-LIB 2.0; for a joint query every network's inputs, then every network's outputs), or for a 1.0
    file the declared constants ``X_i`` then ``Y_j`` (scalars of type Real)."""
    if declared and prop.joint is not None:
        return [v for n in declared for v in n.inputs] + [v for n in declared for v in n.outputs]
    if declared:
        net = declared[0]
        return [net.inputs[0], net.outputs[0]]
    return ([DeclaredVariable(f"X_{i}", "Real", ()) for i in range(prop.n_inputs)]
            + [DeclaredVariable(f"Y_{j}", "Real", ()) for j in range(prop.n_outputs)])


def assignment_outputs(prop, y: np.ndarray) -> np.ndarray:
    """The declared outputs' values in a network output ``y`` (for a joint query, the leading part of the
    joint output; its hidden nodes and product terms follow)."""
    y = np.asarray(y).reshape(-1)
    return y if prop.joint is None else y[:prop.joint.n_declared_outputs]


def _split_values(variables: list[DeclaredVariable], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    flat = np.concatenate([np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)])
    out, start = [], 0
    for v in variables:
        n = math.prod(v.shape)
        out.append(flat[start:start + n])
        start += n
    if start != flat.size:
        raise InvalidInputError(f"the assignment has {flat.size} values but the variables need {start}")
    return out


def format_vnnlib2_assignment(variables: list[DeclaredVariable], x: np.ndarray, y: np.ndarray) -> str:
    """The standard's command-line assignment format (VNN-LIB 2.0, chapter 5): for each variable a line
    ``NAME TYPE [d1,d2,...]`` and then one line per element in row-major order. No trailing newline."""
    lines = []
    for v, values in zip(variables, _split_values(variables, x, y)):
        lines.append(f"{v.name} {v.element_type} [{','.join(str(d) for d in v.shape)}]")
        lines.extend(_value_text(a) for a in values)
    return "\n".join(lines)


def serialise_assignment(directory: str | os.PathLike, variables: list[DeclaredVariable], x: np.ndarray,
                         y: np.ndarray) -> list[Path]:
    """The standard's serialised format: ``DIR/NAME.pb``, a serialised ONNX ``TensorProto`` per variable with
    its declared shape (float32: the values are float32 inputs and onnxruntime's float32 outputs; ``Real``
    variables are written as float32 too, exactly, or as float64 when a value has no float32 form: a real
    witness proven by bounds)."""
    from onnxdual.frontend.tensors import tensor_proto_bytes

    out = prepare_dir(directory, "assignment directory")
    paths = []
    for v, values in zip(variables, _split_values(variables, x, y)):
        # a witness proven by bounds may be a real input float32 cannot represent: keep it exact in float64
        exact32 = bool(np.all(values.astype(np.float32).astype(np.float64) == values))
        dtype = np.float64 if v.element_type == "float64" or not exact32 else np.float32
        path = out / f"{v.name}.pb"
        try:
            atomic_write(path, tensor_proto_bytes(values.astype(dtype).reshape(v.shape), v.name))
        except OSError as exc:
            raise InvalidInputError(f"cannot write {path}: {exc.strerror or exc}") from None
        paths.append(path)
    return paths
