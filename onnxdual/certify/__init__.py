"""Certification of models and cascades (Alg. 2) on labelled data: the run (:mod:`.run`), the one margin
certifier shared with cascade training (:mod:`.margins`) and the cascade manifest format (:mod:`.manifest`)."""

from onnxdual.certify.manifest import CASCADE_FORMAT, MANIFEST, read_manifest, write_manifest
from onnxdual.certify.margins import certified_predictions, worst_margins
from onnxdual.certify.run import CertifyResult, CertifySettings, Stage, certify, load_stages

__all__ = ["CASCADE_FORMAT", "MANIFEST", "CertifyResult", "CertifySettings", "Stage", "certified_predictions",
           "certify", "load_stages", "read_manifest", "worst_margins", "write_manifest"]
