"""The network declarations of a VNN-LIB 2.0 query (``declare-network`` with its inputs, hidden nodes and
outputs, their element types and shapes), read with the reference ``vnnlib`` parser."""

from __future__ import annotations

from dataclasses import dataclass

from onnxdual.specs.reader import detect_version
from onnxdual.specs.vnnlib2 import ELEMENT_TYPES, parse_reference_query

#: ONNX ``TensorProto`` type names (lower case) -> VNN-LIB spelling
_ONNX_TO_VNNLIB = {"float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16",
                   "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
                   "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
                   "string": "string", "complex64": "complex64", "complex128": "complex128"}


def vnnlib_type(onnx_type: str) -> str:
    """The VNN-LIB name of an ONNX element type name (``"float"`` -> ``"float32"``)."""
    return _ONNX_TO_VNNLIB.get(onnx_type, onnx_type)


@dataclass(frozen=True)
class DeclaredVariable:
    name: str
    element_type: str  # VNN-LIB spelling: "Real", "float32", ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DeclaredNetwork:
    """A ``declare-network`` of a VNN-LIB 2.0 query."""

    name: str
    inputs: tuple[DeclaredVariable, ...]
    hidden: tuple[DeclaredVariable, ...]
    outputs: tuple[DeclaredVariable, ...]
    equal_to: str | None = None
    isomorphic_to: str | None = None

    @property
    def variables(self) -> tuple[DeclaredVariable, ...]:
        return self.inputs + self.hidden + self.outputs


def declared_networks(text: str, source: str = "<string>") -> list[DeclaredNetwork]:
    """The network declarations of a VNN-LIB 2.0 query in declaration order (``[]`` for a 1.0 file).
    Raises :class:`~onnxdual.specs.SpecError` for a query the reference parser rejects."""
    if detect_version(text) != "2.0":
        return []
    query = parse_reference_query(text, source)

    def var(v) -> DeclaredVariable:
        kind = str(v.dtype).split(".")[-1]
        if kind == "Unknown":  # the reference parser (vnnlib 1.0.2) types a declared Real as Unknown
            kind = "Real"
        return DeclaredVariable(v.name, ELEMENT_TYPES.get(kind, kind.lower()), tuple(int(d) for d in v.shape))

    out = []
    for n in query.networks:
        out.append(DeclaredNetwork(n.name, tuple(map(var, n.inputs)), tuple(map(var, n.hidden)),
                                   tuple(map(var, n.outputs)), n.equal_to or None,
                                   getattr(n, "isometric_to", None) or None))
    return out
