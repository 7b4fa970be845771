"""Size-like settings are checked up front with stated limits (issue 17 G): an absurd architecture size or
count fails at once with a typed error (exit 2 from the CLI), never a hang or an exhausted memory."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from onnxdual.errors import InvalidInputError
from onnxdual.training import TrainConfig
from onnxdual.training.architectures import MAX_K, build_architecture
from onnxdual.training.config import LIMITS
from onnxdual_cli.train import train_command


@pytest.mark.parametrize("name", ["deep:100000000", f"wide:{MAX_K + 1}", "deep:0", "wide:-3",
                                  "deep:" + "9" * 5000])
def test_architecture_sizes_are_bounded(name):
    with pytest.raises(InvalidInputError, match="deep:K|wide:K|K must lie"):
        build_architecture(name, (1, 8, 8))


def test_the_largest_allowed_k_builds():
    assert build_architecture(f"deep:{MAX_K}", (1, 8, 8)) is not None


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_config_limits(name):
    with pytest.raises(InvalidInputError, match=f"at most {LIMITS[name]}"):
        TrainConfig(eps=0.1, **{name: LIMITS[name] + 1})
    TrainConfig(eps=0.1, **{name: LIMITS[name]})


def test_negative_seed_is_refused():
    with pytest.raises(InvalidInputError, match="seed"):
        TrainConfig(eps=0.1, seed=-1)


@pytest.mark.parametrize("args,message", [
    (["--arch", "deep:100000000"], "K must lie in 1..64"),
    (["--proj", "1000000000"], "--proj must lie in 1..10000"),
    (["--epochs", "1000000000"], "1<=x<=100000"),
    (["--batch-size", "0"], "1<=x<=1000000"),
    (["--cascade", "100000"], "1<=x<=100"),
    (["--seed", str(2 ** 64)], "0<=x<="),
])
def test_cli_refuses_before_reading_data(tmp_path, args, message):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 1, 4, 4), np.float32), y=np.zeros(2, np.int64))
    result = CliRunner().invoke(train_command, ["--data", str(data), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_help_states_the_limits():
    text = CliRunner().invoke(train_command, ["--help"], terminal_width=200).output
    for limit in ("K from 1 to 64", "1 to 10000", "1<=x<=100000", "1<=x<=1000000"):
        assert limit in text


def test_an_empty_out_is_refused(tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((2, 1, 4, 4), np.float32), y=np.zeros(2, np.int64))
    result = CliRunner().invoke(train_command, ["--data", str(data), "--out", ""])
    assert result.exit_code == 2 and "--out must not be empty" in result.output, result.output
