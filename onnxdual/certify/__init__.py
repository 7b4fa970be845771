"""Certification of models and cascades (Alg. 2) on labelled data: the run (:mod:`.run`) of batches
(:mod:`.batch`), its estimate (:mod:`.estimate`) and progress file (:mod:`.journal`), the one margin certifier
shared with cascade training (:mod:`.margins`), the cascade manifest format (:mod:`.manifest`) and the
one-call Python API (:mod:`.api`).

The package itself is that call: ``onnxdual.certify(model, x, y, eps, ...)`` is
:func:`onnxdual.certify.api.certify_model` (a model file, manifest, loaded network or torch module; returns a
:class:`CertifyResult` whose ``.examples``, ``.summary`` and ``.cascade`` are pandas DataFrames), while
``onnxdual.certify.certify`` stays the run over loaded stages that ``onnxdual certify`` uses.
"""

import sys
import types

from onnxdual.certify.api import certify_model
from onnxdual.certify.manifest import CASCADE_FORMAT, MANIFEST, read_manifest, write_manifest
from onnxdual.certify.margins import certified_predictions, worst_margins
from onnxdual.certify.run import CertifyResult, CertifySettings, Stage, certify, load_stages


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`~onnxdual.certify.api.certify_model` (``onnxdual.certify(...)``)."""

    def __call__(self, *args, **kwargs) -> CertifyResult:
        return certify_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["CASCADE_FORMAT", "MANIFEST", "CertifyResult", "CertifySettings", "Stage", "certified_predictions",
           "certify", "certify_model", "load_stages", "read_manifest", "worst_margins", "write_manifest"]
