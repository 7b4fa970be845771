"""``onnxdual train --tensorboard DIR``: the training metrics as TensorBoard scalars, through the training
loop's progress hooks (:class:`onnxdual.training.interfaces.TrainCallback`), so the library itself writes
nothing but its own files. TensorBoard is an optional dependency (``pip install 'onnxdual[tensorboard]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxdual_cli.errors import UserError

#: per-step metrics worth a point per optimiser step (the rest are logged once per epoch)
STEP_METRICS = ("robust_loss", "robust_err_estimate", "eps")


def summary_writer_class() -> Any:
    """torch's ``SummaryWriter``; a one-line user error when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install 'onnxdual[tensorboard]' "
                        "(or pip install tensorboard)") from None
    return SummaryWriter


def tensorboard_callback(log_dir: Path) -> Any:
    """A cascade-aware training callback that logs every metric to TensorBoard event files in ``log_dir``:
    ``step/<metric>`` per optimiser step, ``epoch/<metric>`` per epoch (a cascade's stage I under
    ``stageI/``). The global step is derived from the epoch, so a resumed run continues the same curves."""
    from onnxdual.training.cascade import CascadeCallback

    writer = summary_writer_class()(log_dir=str(log_dir))

    class Callback(CascadeCallback):
        def __init__(self) -> None:
            self.prefix = ""
            self.epoch = 1
            self.steps = 1

        def on_stage_start(self, stage: int, stages: int, n_examples: int) -> None:
            self.prefix = f"stage{stage}/"

        def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            self.epoch, self.steps = epoch, max(1, steps)

        def on_step(self, i: int, n: int, metrics: Mapping[str, float]) -> None:
            step = (self.epoch - 1) * self.steps + i
            for key in STEP_METRICS:
                if key in metrics:
                    writer.add_scalar(f"{self.prefix}step/{key}", float(metrics[key]), step)

        def on_epoch(self, metrics: Mapping[str, float]) -> None:
            epoch = int(metrics.get("epoch", self.epoch))
            for key, value in metrics.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"{self.prefix}epoch/{key}", float(value), epoch)
            writer.flush()

        def close(self) -> None:
            writer.close()

    return Callback()


__all__ = ["tensorboard_callback", "summary_writer_class", "STEP_METRICS"]
