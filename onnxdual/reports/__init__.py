"""Reports for certification runs: pandas DataFrames in, one self-contained HTML page plus CSV/JSON out.

Separate from the engine on purpose: nothing here computes bounds, and nothing in the engine prints.

    from onnxdual.reports import write_certify_report
    paths = write_certify_report("out/", examples, summary, meta, cascade)   # -> {"report_html": Path, ...}

See :func:`write_certify_report` and :func:`render_html` for the expected columns.
"""

from __future__ import annotations

import importlib
from typing import Any

# Rendering pulls in matplotlib and jinja2 (~0.7 s): load it on first use, so that code needing only
# :mod:`onnxdual.reports.meta` (every certify run, every CLI start) does not pay for it.
_LAZY = {"MAX_EXAMPLE_ROWS": "html", "render_html": "html", "REPORT_FILES": "writer",
         "summary_json": "writer", "write_certify_report": "writer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"onnxdual.reports.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'onnxdual.reports' has no attribute {name!r}")


__all__ = ["MAX_EXAMPLE_ROWS", "REPORT_FILES", "render_html", "summary_json", "write_certify_report"]
