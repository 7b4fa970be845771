"""VNN-LIB property parsing for the ``verify`` command (pure library code).

``parse_vnnlib(path_or_text)`` turns a VNN-LIB 1.0 (VNN-COMP) or 2.0 file into a :class:`Property`:
a list of cases, each an input box (:class:`InputRegion`) with the UNSAFE output region over it as a
disjunction of conjunctions ``A @ y <= b`` (:class:`OutputConstraint`). The property holds ("unsat")
iff no input of any case's box reaches any of that case's conjunctions.

See :mod:`onnxdual.specs.vnnlib1` and :mod:`onnxdual.specs.vnnlib2` for the supported syntax,
:mod:`onnxdual.specs.declarations` for the network declarations of a 2.0 query, and
:mod:`onnxdual.specs.witness` for counterexample output.
"""

from onnxdual.specs.declarations import DeclaredNetwork, DeclaredVariable, declared_networks, vnnlib_type
from onnxdual.specs.model import (
    InputRegion,
    OutputConstraint,
    Property,
    SpecError,
    check_io_sizes,
    input_in_region,
    is_counterexample,
    is_violated,
)
from onnxdual.specs.reader import detect_version, parse_vnnlib, parse_vnnlib_text
from onnxdual.specs.witness import (
    assignment_outputs,
    assignment_variables,
    format_vnncomp_witness,
    format_vnnlib2_assignment,
    serialise_assignment,
)

__all__ = [
    "InputRegion",
    "OutputConstraint",
    "Property",
    "SpecError",
    "parse_vnnlib",
    "parse_vnnlib_text",
    "detect_version",
    "is_violated",
    "is_counterexample",
    "input_in_region",
    "check_io_sizes",
    "format_vnncomp_witness",
    "format_vnnlib2_assignment",
    "serialise_assignment",
    "assignment_variables",
    "assignment_outputs",
    "DeclaredNetwork",
    "DeclaredVariable",
    "declared_networks",
    "vnnlib_type",
]
