"""``onnxdual.certify(model, x, y, eps, ...)``: every kind of model (ONNX file, loaded network, torch module,
a list of them as a cascade) gives the same run as ``onnxdual certify`` with the same defaults, and the
result's tables are pandas DataFrames."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import onnxdual
from onnxdual import defaults
from onnxdual.frontend.export import export_onnx
from onnxdual_cli.main import cli


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(9, 12), nn.ReLU(), nn.Linear(12, 3))
    path = export_onnx(module, (1, 3, 3), tmp / "m.onnx")
    x = torch.rand(10, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = module(x).argmax(1)
    np.savez(tmp / "d.npz", x=x.numpy(), y=y.numpy())
    return module, path, x, y, tmp


KW = dict(batch_size=4, pgd_steps=3, relaxation="adaptive")


def test_every_kind_of_model_gives_the_same_run(model_and_data):
    module, path, x, y, _ = model_and_data
    by_module = onnxdual.certify(module, x, y, [0.01, 0.1], **KW)
    by_file = onnxdual.certify(path, x, y, [0.01, 0.1], **KW)
    by_network = onnxdual.certify(onnxdual.load(path), x.numpy(), y.numpy(), (0.01, 0.1), **KW)
    for result in (by_module, by_file, by_network):
        assert isinstance(result, onnxdual.CertifyResult)
        assert isinstance(result.examples, pd.DataFrame) and isinstance(result.summary, pd.DataFrame)
        assert result.cascade is None and result.violations == []
    cols = ["index", "eps", "label", "prediction", "certified", "pgd_success"]
    pd.testing.assert_frame_equal(by_module.examples[cols], by_file.examples[cols])
    pd.testing.assert_frame_equal(by_file.examples, by_network.examples)
    np.testing.assert_allclose(by_module.examples.margin_lower_bound, by_file.examples.margin_lower_bound,
                               rtol=1e-5, atol=1e-5)
    assert list(by_file.summary.eps) == [0.01, 0.1] and len(by_file.examples) == 20
    assert by_file.settings.clip == defaults.CLIP  # the command line's domain


def test_a_list_is_a_cascade(model_and_data):
    module, path, x, y, _ = model_and_data
    result = onnxdual.certify([module, path], x, y, 0.1, **KW)
    assert isinstance(result.cascade, pd.DataFrame) and list(result.cascade.stage) == [1, 2]
    assert [s.name.split(":")[0] for s in result.stages] == ["stage 1", "stage 2"]


def test_the_api_and_the_command_line_agree_with_their_defaults(model_and_data):
    _, path, x, y, tmp = model_and_data
    out = tmp / "cli"
    run = CliRunner().invoke(cli, ["certify", str(path), "--data", str(tmp / "d.npz"), "--out", str(out),
                                   "--quiet", "--relaxation", "adaptive"], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    api = onnxdual.certify(path, x, y, relaxation="adaptive")  # every other option at its default
    assert api.settings.eps == (defaults.EPS,)
    cli_examples = pd.read_csv(out / "examples.csv")
    pd.testing.assert_frame_equal(api.examples.astype({"stage": float}),
                                  cli_examples.astype({"stage": float}),
                                  check_dtype=False)


def test_bad_models_and_data_are_typed_errors(model_and_data):
    module, _, x, y, _ = model_and_data
    with pytest.raises(onnxdual.InvalidInputError):
        onnxdual.certify(42, x, y, 0.1)
    with pytest.raises(onnxdual.InvalidInputError):
        onnxdual.certify([], x, y, 0.1)
    with pytest.raises(onnxdual.InvalidInputError):
        onnxdual.certify(module, torch.rand(10), y, 0.1)
    with pytest.raises(onnxdual.InvalidInputError):
        onnxdual.certify(module, x, y, -0.1)
    with pytest.raises(onnxdual.InvalidInputError):
        onnxdual.certify(module, x + 2, y, 0.1)  # outside the default data domain [0, 1]


def test_the_package_stays_a_package():
    assert callable(onnxdual.certify)
    assert onnxdual.certify.CertifySettings is onnxdual.CertifySettings
    assert onnxdual.certify.certify.__module__ == "onnxdual.certify.run"
    assert "certify_model" in onnxdual.certify.__doc__ and isinstance(onnx.ModelProto, type)
