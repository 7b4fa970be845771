"""Data model of a parsed verification property, plus the checks the ``verify`` command needs on
concrete points (is an input in a box, does an output reach the unsafe region).

A :class:`Property` is a list of *cases*. Each case pairs one input box with the UNSAFE output region
over that box, written as a disjunction of conjunctions ``A @ y <= b``. The property holds
("unsat" in VNN-COMP terms) iff, for every case, no input in the box makes the network output land in
any of the case's conjunctions; a counterexample ("sat") is an ``x`` in some case's box whose output
satisfies one of that case's conjunctions.

All arrays are float64 copies owned by their object (no two cases share an array). They are left
writable, because ``torch.as_tensor`` warns on read-only numpy arrays; treat them as read-only.
Equality of the dataclasses is identity (``eq=False``): numpy arrays make field-wise ``==`` ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxdual.errors import OnnxDualError, UnsupportedError


class SpecError(OnnxDualError):
    """A property file cannot be read, is malformed, or uses a construct onnxdual does not support.
    The message is one line and names the file and, where there is one, the line or term."""


class UnsupportedSpecError(SpecError, UnsupportedError):
    """A well-formed property that uses a construct onnxdual does not decide (a non-box input set, several
    networks, hidden nodes, a non-linear term)."""


def _frozen_array(value, ndim: int, what: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must be a {ndim}-D array, got shape {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class InputRegion:
    """One box of the input space, flat, in ``X_i`` index order (row-major order of the ONNX input).

    ``[lower, upper]`` is the closed float64 box that proofs cover. ``[witness_lower, witness_upper]``
    (default: the same) is where a witness must lie: smaller where the file's bound is strict (``X < 1``
    excludes 1) or not a float64 number (``3 X <= 1``: the box is rounded outwards, witnesses inwards)."""

    lower: np.ndarray  # (n_in,) float64
    upper: np.ndarray  # (n_in,) float64
    witness_lower: np.ndarray | None = None  # (n_in,) float64
    witness_upper: np.ndarray | None = None  # (n_in,) float64

    def __post_init__(self):
        lower = _frozen_array(self.lower, 1, "InputRegion.lower")
        upper = _frozen_array(self.upper, 1, "InputRegion.upper")
        if lower.shape != upper.shape:
            raise ValueError(f"InputRegion bounds differ in shape: {lower.shape} vs {upper.shape}")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        for name, default in (("witness_lower", lower), ("witness_upper", upper)):
            value = getattr(self, name)
            value = default.copy() if value is None else _frozen_array(value, 1, f"InputRegion.{name}")
            if value.shape != lower.shape:
                raise ValueError(f"InputRegion.{name} has shape {value.shape}, the box {lower.shape}")
            object.__setattr__(self, name, value)
        if np.any(self.witness_lower < lower) or np.any(self.witness_upper > upper):
            raise ValueError("InputRegion: the witness box must lie inside the box")

    @property
    def n_inputs(self) -> int:
        return int(self.lower.shape[0])


@dataclass(frozen=True, eq=False)
class OutputConstraint:
    """A conjunction of linear constraints ``A @ y <= b`` on the flat network output ``y`` (``Y_i`` order).
    ``k = 0`` rows is the empty conjunction, i.e. *every* output is in it. ``strict`` (default: none) marks
    the rows the file wrote with ``<`` (VNN-LIB 2.0): a witness must meet ``a_i y < b_i``, and a proof that
    ``a_i y >= b_i`` everywhere suffices (the verifier's input splitting accepts a zero margin there)."""

    A: np.ndarray  # (k, n_out) float64
    b: np.ndarray  # (k,) float64
    strict: np.ndarray | None = None  # (k,) bool

    def __post_init__(self):
        A = _frozen_array(self.A, 2, "OutputConstraint.A")
        b = _frozen_array(self.b, 1, "OutputConstraint.b")
        if A.shape[0] != b.shape[0]:
            raise ValueError(f"OutputConstraint: A has {A.shape[0]} rows but b has {b.shape[0]} entries")
        strict = np.zeros(b.shape, dtype=bool) if self.strict is None else np.array(self.strict, dtype=bool)
        if strict.shape != b.shape:
            raise ValueError(f"OutputConstraint: strict has shape {strict.shape}, b {b.shape}")
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "strict", strict)

    def contains(self, y) -> bool:
        """``True`` iff every row holds exactly (zero tolerance): ``a_i y <= b_i``, or ``<`` where strict."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if self.A.shape[0] == 0:
            return True
        ay = self.A @ y
        return bool(np.all(np.where(self.strict, ay < self.b, ay <= self.b)))


@dataclass(frozen=True, eq=False)
class Property:
    """A parsed VNN-LIB property.

    ``cases``: list of ``(InputRegion, [OutputConstraint, ...])``; for each case the list is the UNSAFE
    output region there, as a disjunction of conjunctions. An empty ``cases`` list means the assertions
    are unsatisfiable on their own (the property holds trivially); a case with an empty list of
    conjunctions can never be violated.

    The remaining fields are metadata with defaults: ``input_shape``/``output_shape`` are the declared
    tensor shapes for VNN-LIB 2.0 files (``None`` for 1.0, whose variables are flat), ``input_name`` /
    ``output_name`` the declared variable names (``X``/``Y`` for 1.0), ``version`` ``"1.0"`` or ``"2.0"``,
    ``source`` the file path (or ``"<string>"``), ``joint`` the :class:`~onnxdual.specs.joint.JointLayout`
    of a VNN-LIB 2.0 query over several networks / tensors, hidden nodes or non-linear terms (``None``: the
    property is of the given network itself).
    """

    n_inputs: int
    n_outputs: int
    cases: list = field(default_factory=list)  # list[tuple[InputRegion, list[OutputConstraint]]]
    input_shape: tuple | None = None
    output_shape: tuple | None = None
    input_name: str = "X"
    output_name: str = "Y"
    version: str = "1.0"
    source: str = "<string>"
    joint: object = None  # a JointLayout (onnxdual.specs.joint): the property is of the joint network

    def __post_init__(self):
        for i, (region, conjunctions) in enumerate(self.cases):
            if region.n_inputs != self.n_inputs:
                raise ValueError(
                    f"case {i}: input box has {region.n_inputs} entries, expected {self.n_inputs}"
                )
            for c in conjunctions:
                if c.A.shape[1] != self.n_outputs:
                    raise ValueError(
                        f"case {i}: constraint has {c.A.shape[1]} columns, expected {self.n_outputs}"
                    )

    @property
    def n_cases(self) -> int:
        return len(self.cases)


def input_in_region(region: InputRegion, x) -> bool:
    """``True`` iff the flat input ``x`` lies in the region: its witness box (bounds inclusive, zero
    tolerance; NaN is outside)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != region.n_inputs:
        raise ValueError(f"input has {x.shape[0]} entries but the region has {region.n_inputs}")
    return bool(np.all((region.witness_lower <= x) & (x <= region.witness_upper)))


def is_violated(prop: Property, case_index: int, y) -> bool:
    """``True`` iff the flat output ``y`` lies in the unsafe region of case ``case_index``, i.e. satisfies
    at least one of its conjunctions exactly (zero tolerance; strict rows strictly, see
    :class:`OutputConstraint`)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != prop.n_outputs:
        raise ValueError(f"output has {y.shape[0]} entries but the property has {prop.n_outputs}")
    _, conjunctions = prop.cases[case_index]
    return any(c.contains(y) for c in conjunctions)


def is_counterexample(prop: Property, x, y) -> bool:
    """``True`` iff some case has ``x`` in its box and ``y`` in its unsafe region (zero tolerance).
    ``y`` must be the network output at ``x``; that is the caller's business."""
    return any(
        input_in_region(region, x) and is_violated(prop, i, y) for i, (region, _) in enumerate(prop.cases)
    )


def check_io_sizes(prop: Property, n_inputs: int, n_outputs: int, network: str = "the network") -> None:
    """Raise :class:`SpecError` unless the property's variable counts match the network's flat input and
    output sizes (batch dimension excluded)."""
    problems = []
    if prop.n_inputs != n_inputs:
        problems.append(f"{prop.n_inputs} input variables but {network} takes {n_inputs} values")
    if prop.n_outputs != n_outputs:
        problems.append(f"{prop.n_outputs} output variables but {network} produces {n_outputs} values")
    if problems:
        raise SpecError(f"{prop.source}: property does not fit {network}: " + "; ".join(problems))
