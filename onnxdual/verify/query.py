"""The VNN-LIB 2.0 standard's checks of a query against the networks given for it (chapter 5, error
conditions of the ``verify`` command)."""

from __future__ import annotations

from onnxdual.specs.declarations import DeclaredNetwork, vnnlib_type
from onnxdual.verify.network import Network
from onnxdual.verify.result import QueryError


def match_networks(declared: list[DeclaredNetwork], given: list[tuple[str | None, str]],
                   source: str = "the query") -> dict[str, str]:
    """Map each network the query needs to its ONNX file (error condition 1 of the standard's ``verify``
    command: insufficient or unnecessary model files). ``given``: ``(name or None, path)`` pairs from
    ``--network NAME=PATH``. A 1.0 query (``declared == []``) needs exactly one file, under any name."""
    names = [n for n, _ in given]
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicates:
        raise QueryError(f"--network {duplicates[0]}=... is given more than once", condition=1)
    if not declared:
        if len(given) != 1:
            raise QueryError(f"{source} is a VNN-LIB 1.0 property of one network; {len(given)} model files "
                             "were given (use one --network NAME=MODEL.onnx)", condition=1)
        return {given[0][0] or "N": given[0][1]}
    needed = [n.name for n in declared if n.equal_to is None]
    if len(given) == 1 and given[0][0] is None and len(needed) == 1:
        return {needed[0]: given[0][1]}
    if any(n is None for n in names):
        raise QueryError(f"{source} declares networks {', '.join(needed)}: give each as "
                         "--network NAME=MODEL.onnx", condition=1)
    missing = [n for n in needed if n not in names]
    extra = [n for n in names if n not in needed]
    if missing or extra:
        parts = []
        if missing:
            plural = "s" if len(missing) > 1 else ""
            parts.append(f"no model file for network{plural} " + ", ".join(missing))
        if extra:
            known = {n.name for n in declared}
            why = {n: "declared equal-to another network" if n in known else "not declared" for n in extra}
            parts.append(", ".join(f"{n!r} ({why[n]})" for n in extra) + " given but not needed")
        raise QueryError(f"{source}: " + "; ".join(parts), condition=1)
    return {n: p for n, p in given}


def check_element_types(declared: list[DeclaredNetwork], networks: dict[str, Network], *, strict: bool,
                        source: str = "the query") -> list[str]:
    """Error conditions 2 and 3 of the standard's ``verify`` command. Returns notes for stderr.

    * condition 2: a declared ONNX element type differs from the model's (``Real`` matches anything);
    * condition 3: onnxdual's analysis is real arithmetic (sat answers are confirmed in float32 by
      onnxruntime; proofs are not float-exact), so only ``Real`` is sound. ``float32`` declarations are
      analysed as ``Real`` with a note, unless ``strict``, where they are refused as the standard requires;
      every other type is refused."""
    notes = []
    for decl in declared:
        net = networks.get(decl.name) or networks.get(decl.equal_to or "")
        if net is None:
            continue
        model_types = [vnnlib_type(net.input_type)] * len(decl.inputs) + \
                      [vnnlib_type(net.output_type)] * len(decl.outputs)
        for v, model_type in zip(decl.inputs + decl.outputs, model_types):
            if v.element_type != "Real" and v.element_type != model_type:
                raise QueryError(f"{source}: {v.name} of network {decl.name} is declared {v.element_type} "
                                 f"but the model's tensor is {model_type}", condition=2)
    as_real = []
    for decl in declared:
        for v in decl.variables:
            if v.element_type == "Real":
                continue
            if v.element_type == "float32" and not strict:
                as_real.append(v.name)
                continue
            raise QueryError(f"{source}: {v.name} is declared {v.element_type}, which onnxdual cannot "
                             "analyse soundly (its proofs hold in real arithmetic); declare it Real to "
                             "accept that", condition=3)
    if as_real:
        notes.append(f"{', '.join(as_real)} declared float32: analysed in real arithmetic (sat answers are "
                     "checked in float32); --strict refuses non-Real types as the standard requires")
    return notes
