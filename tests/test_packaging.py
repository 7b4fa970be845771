"""The package list in pyproject.toml names every package of the source tree: a package left out works in
the editable development install but is missing from a regular ``pip install``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def test_every_source_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            package = ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
            assert package in listed, f"{package} is not in [tool.setuptools] packages of pyproject.toml"
