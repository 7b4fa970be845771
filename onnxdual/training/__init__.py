"""Robust training (Wong et al. 2018, §3 and App. G) and robust cascades (§3.3, Alg. 2).

    from onnxdual.training import TrainConfig, train, train_cascade, evaluate

    run = train("small", train_set, TrainConfig(eps=0.1, epochs=20), "out/")      # -> out/model.onnx
    cascade = train_cascade(3, "small", train_set, TrainConfig(eps=0.1), "cas/")   # -> cas/cascade.json
    evaluate(run.model_path, test_set, eps=0.1, report_dir="out/report")           # exact + PGD

Built-in architectures (``small``, ``large``, ``resnet``, ``wide:K``, ``deep:K``; App. G) live in
:mod:`onnxdual.training.architectures`.
"""

from onnxdual.training.architectures import ARCHITECTURES, build_architecture, export_onnx
from onnxdual.training.cascade import CascadeCallback, CascadeResult, exact_certifier, train_cascade
from onnxdual.training.trainer import (ArrayData, EvalResult, SoundnessError, TrainCallback, TrainConfig,
                                       TrainData, TrainResult, eps_at, evaluate, init_distributed, lr_at,
                                       train)

__all__ = [
    "TrainConfig", "TrainCallback", "TrainResult", "TrainData", "ArrayData", "train", "eps_at", "lr_at",
    "evaluate", "EvalResult", "SoundnessError", "init_distributed",
    "train_cascade", "CascadeResult", "CascadeCallback", "exact_certifier",
    "build_architecture", "export_onnx", "ARCHITECTURES",
]
