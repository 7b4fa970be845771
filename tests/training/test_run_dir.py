"""The run directory of ``train``: a killed run's temporary files are cleaned, and a directory another run
holds is refused at once (issue 17 B)."""

from __future__ import annotations

import pytest

from onnxdual.errors import OutputBusyError
from onnxdual.files import lock_dir
from onnxdual.training import TrainConfig, train
from tests.training.shared import synthetic

DEAD_PID = 2 ** 22 + 12345  # above the default pid_max: no such process


def test_stale_temp_files_are_cleaned_and_a_held_directory_is_busy(conv_model, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / f".metrics.csv.{DEAD_PID}.0123456789ab.tmp").write_text("torn row")
    (out / f".checkpoint.pt.{DEAD_PID}.ba9876543210.tmp").write_bytes(b"half")
    cfg = TrainConfig(eps=0.05, proj=None, epochs=1, batch_size=20, ramp_epochs=1)
    with lock_dir(out):
        with pytest.raises(OutputBusyError, match="another onnxdual run"):
            train(conv_model, synthetic(40), cfg, out)
    assert len(list(out.iterdir())) == 2  # the busy attempt touched nothing
    train(conv_model, synthetic(40), cfg, out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.csv", "model.onnx"]
