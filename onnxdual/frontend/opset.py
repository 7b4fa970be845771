"""The opset policy: which ONNX opsets onnxdual reads, and how a model is moved to one onnx2torch converts.

Three numbers, one place, because they only make sense together:

* :data:`MIN_OPSET` (7) -- the oldest default-domain opset onnxdual loads. Older files (VNN-COMP uses
  opsets 8 to 15, ACAS Xu files have Flatten-1) are upgraded with ONNX's version converter, which has
  adapters from opset 7 on; what ``onnxdual supports --onnx-opset-versions`` reports as the lower end.
* :data:`UPGRADE_OPSET` (13) -- what an old model is upgraded to when onnx2torch has no converter for one of
  its operator versions (Flatten-1, Dropout-7, Slice-1): the oldest opset onnx2torch covers completely.
* :data:`CONVERT_OPSET` (17) -- the newest opset onnx2torch converts for every operator onnxdual has a dual
  layer for. Newer models are converted *down* to it (:func:`downgrade`; the verifier checks the result
  against onnxruntime on the original model), so the upper end onnxdual accepts is the newest opset of the
  installed onnx package (:func:`supported_opsets`).

Also here: a model's opset for a domain (:func:`opset_of`) and the operator version the ONNX schema
resolves for it (:func:`since_version`), which keys the dual-layer registry like onnx2torch keys its
converters.
"""

from __future__ import annotations

import onnx
from onnx import helper, version_converter

MIN_OPSET = 7
UPGRADE_OPSET = 13
CONVERT_OPSET = 17

#: a private domain that hides a node from the version converter (see :func:`downgrade`)
HOLD_DOMAIN = "onnxdual.hold"


def supported_opsets() -> tuple[int, int]:
    """The oldest and newest default-domain opset onnxdual loads."""
    return MIN_OPSET, int(onnx.defs.onnx_opset_version())


def opset_of(model: onnx.ModelProto, domain: str) -> int:
    """The opset the model imports for ``domain`` (``""`` and ``ai.onnx`` are the same); 0 if none."""
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return imp.version
    return 0


def since_version(op_type: str, domain: str, opset: int) -> int | None:
    """The opset in which the operator version a model of ``opset`` uses was introduced (the ONNX schema's
    ``since_version``), or None where ONNX has no schema for it (a custom domain, an unknown operator)."""
    if opset <= 0:
        return None
    try:
        schema = onnx.defs.get_schema(op_type, max_inclusive_version=opset,
                                      domain="" if domain == "ai.onnx" else domain)
    except Exception:  # noqa: BLE001 - onnx raises SchemaError for unknown operators and domains
        return None
    return int(schema.since_version)


def upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model converted up to :data:`UPGRADE_OPSET` with ONNX's version converter (raises on failure)."""
    return version_converter.convert_version(model, UPGRADE_OPSET)


def downgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert a model of opset > :data:`CONVERT_OPSET` down to it, or return it unchanged if ONNX cannot.
    ``Pad`` without ``axes`` (opset 18+) is the same operator as in opset 13 but has no down adapter: it is
    held out of the conversion and put back."""
    if opset_of(model, "") <= CONVERT_OPSET:
        return model
    work = onnx.ModelProto()
    work.CopyFrom(model)
    held = [n for n in work.graph.node
            if n.op_type == "Pad" and n.domain in ("", "ai.onnx") and len(n.input) <= 3]
    for n in held:
        n.domain = HOLD_DOMAIN
    if held:
        work.opset_import.append(helper.make_opsetid(HOLD_DOMAIN, 1))
    try:
        out = version_converter.convert_version(work, CONVERT_OPSET)
    except Exception:  # noqa: BLE001 - no adapter: keep the original, onnx2torch may still manage
        return model
    for n in out.graph.node:
        if n.domain == HOLD_DOMAIN:
            n.domain = ""
    keep = [o for o in out.opset_import if o.domain != HOLD_DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out
