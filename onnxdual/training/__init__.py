"""Robust training (Wong et al. 2018, §3 and App. G) and robust cascades (§3.3, Alg. 2).

    from onnxdual.training import TrainConfig, train, train_cascade, evaluate

    run = train("small", train_set, TrainConfig(eps=0.1, epochs=20), "out/")      # -> out/model.onnx
    cascade = train_cascade(3, "small", train_set, TrainConfig(eps=0.1), "cas/")   # -> cas/cascade.json
    evaluate(run.model_path, test_set, eps=0.1, report_dir="out/report")           # exact + PGD

The rooms: :mod:`.config` (settings, eps ramp and learning-rate schedule), :mod:`.interfaces` (data,
callbacks, results), :mod:`.source` (the model source turned into the ONNX template the run trains),
:mod:`.loop` (the training loop), :mod:`.checkpoint` (the run directory's files, RNG state, resume),
:mod:`.distributed` (data-parallel collectives over the ``torchrun`` group of :mod:`onnxdual.distributed`),
:mod:`.evaluation` (exact certification + PGD of the result), :mod:`.cascade` (Alg. 2) and
:mod:`.architectures` (the built-in networks of App. G). The ONNX export and the write-back of trained parameters live in :mod:`onnxdual.frontend.export`.
"""

from onnxdual.distributed import init_distributed
from onnxdual.frontend.export import export_onnx
from onnxdual.training.architectures import ARCHITECTURES, build_architecture
from onnxdual.training.cascade import CascadeCallback, CascadeResult, exact_certifier, train_cascade
from onnxdual.training.config import TrainConfig, clean_weight_at, eps_at, interval_weight_at, lr_at
from onnxdual.training.evaluation import EvalResult, SoundnessError, evaluate
from onnxdual.training.interfaces import ArrayData, TrainCallback, TrainData, TrainResult
from onnxdual.training.loop import train

__all__ = [
    "TrainConfig", "TrainCallback", "TrainResult", "TrainData", "ArrayData", "train", "eps_at",
    "interval_weight_at", "clean_weight_at", "lr_at",
    "evaluate", "EvalResult", "SoundnessError", "init_distributed",
    "train_cascade", "CascadeResult", "CascadeCallback", "exact_certifier",
    "build_architecture", "export_onnx", "ARCHITECTURES",
]
