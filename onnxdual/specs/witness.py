"""Counterexample text in the formats the two VNN-LIB conventions expect.

* VNN-COMP (VNN-LIB 1.0): the result file holds the line ``sat`` followed by one s-expression list
  ``((X_0 v)\\n (X_1 v)\\n ...\\n (Y_0 v) ...)``, inputs first, then outputs, each index in order. The
  VNN-COMP scorer (2022+) reads it by splitting on parentheses and ``name value`` on a single space,
  then re-runs the network on ``X`` and compares with ``Y``.
* VNN-LIB 2.0 standard (``verify`` command of the standard's CLI chapter): after the ``sat`` line, one
  line ``NAME[i,j,...]=value`` per tensor element, variables in declaration order (inputs, then
  outputs), elements in row-major order; a scalar (shape ``[]``) is ``NAME=value``.

Values are written with :func:`repr` of the float64 value: the shortest text that reads back to the
same double, so a float32 witness round-trips exactly.
"""

from __future__ import annotations

import itertools

import numpy as np


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


def _element_lines(name: str, shape, values: list[float]) -> list[str]:
    shape = tuple(int(d) for d in shape)
    if not shape:
        if len(values) != 1:
            raise ValueError(f"{name} is a scalar but {len(values)} values were given")
        return [f"{name}={values[0]!r}"]
    expected = int(np.prod(shape))
    if expected != len(values):
        raise ValueError(f"{name} has shape {list(shape)} ({expected} values) but {len(values)} were given")
    return [
        f"{name}[{','.join(map(str, idx))}]={v!r}"
        for idx, v in zip(itertools.product(*(range(d) for d in shape)), values)
    ]


def format_vnnlib2_assignment(
    x,
    y,
    prop=None,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    input_shape=None,
    output_shape=None,
    with_status_line: bool = False,
) -> str:
    """VNN-LIB 2.0 satisfying assignment: one ``NAME[i,...]=value`` line per element of the input, then
    of the output. Names and shapes come from the keyword arguments, else from ``prop`` (a
    :class:`~onnxdual.specs.Property`; 1.0 properties have no shapes), else ``X``/``Y`` and flat shapes.
    With ``with_status_line`` the text starts with ``sat\\n``. No trailing newline."""
    xs, ys = _values(x), _values(y)
    if prop is not None:
        input_name = input_name or prop.input_name
        output_name = output_name or prop.output_name
        input_shape = input_shape if input_shape is not None else prop.input_shape
        output_shape = output_shape if output_shape is not None else prop.output_shape
    input_name, output_name = input_name or "X", output_name or "Y"
    input_shape = (len(xs),) if input_shape is None else input_shape
    output_shape = (len(ys),) if output_shape is None else output_shape
    lines = _element_lines(input_name, input_shape, xs) + _element_lines(output_name, output_shape, ys)
    text = "\n".join(lines)
    return "sat\n" + text if with_status_line else text
