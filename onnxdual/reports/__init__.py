"""Reports for certification runs: pandas DataFrames in, one self-contained HTML page plus CSV/JSON out.

Separate from the engine on purpose: nothing here computes bounds, and nothing in the engine prints.

    from onnxdual.reports import write_certify_report
    paths = write_certify_report("out/", examples, summary, meta, cascade)   # -> {"report_html": Path, ...}

See :func:`write_certify_report` and :func:`render_html` for the expected columns.
"""

from onnxdual.reports.html import MAX_EXAMPLE_ROWS, render_html
from onnxdual.reports.writer import REPORT_FILES, summary_json, write_certify_report

__all__ = ["MAX_EXAMPLE_ROWS", "REPORT_FILES", "render_html", "summary_json", "write_certify_report"]
