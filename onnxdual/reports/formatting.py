"""Small, dependency-free helpers that turn raw values into display strings or JSON-safe values.

Everything here is total: missing values (``None``, ``NaN``, ``pd.NA``, ``NaT``) format as an em dash
instead of raising, because a report must render whatever partial result a run produced.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

MISSING = "—"
"""What a missing value renders as."""


def is_missing(value: Any) -> bool:
    """True for ``None``, ``pd.NA``, ``NaT`` and non-finite floats (NaN, ±inf)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    if isinstance(value, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(value))
    return False


def as_float(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing or not a number."""
    if is_missing(value) or isinstance(value, (bool, np.bool_)):
        return None if is_missing(value) else float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt_pct(fraction: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage with ``digits`` decimals: ``0.8724 -> '87.2%'``."""
    x = as_float(fraction)
    return MISSING if x is None else f"{100.0 * x:.{digits}f}%"


def fmt_points(fraction: Any, digits: int = 1) -> str:
    """A difference of two fractions in percentage points: ``0.058 -> '5.8 pts'``."""
    x = as_float(fraction)
    return MISSING if x is None else f"{100.0 * x:.{digits}f} pts"


def fmt_int(value: Any) -> str:
    """An integer count with thousands separators: ``12345 -> '12,345'``."""
    x = as_float(value)
    return MISSING if x is None else f"{round(x):,}"


def fmt_num(value: Any, sig: int = 4) -> str:
    """A real number with ``sig`` significant digits (``%g`` style)."""
    x = as_float(value)
    if x is None:
        return MISSING
    return f"{x:.{sig}g}"


def fmt_rate(value: Any) -> str:
    """A throughput (examples per second), with precision that suits its size."""
    x = as_float(value)
    if x is None:
        return MISSING
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_seconds(value: Any) -> str:
    """A duration in seconds as ``'0.42 s'``, ``'12.3 s'``, ``'4 min 05 s'`` or ``'1 h 02 min'``."""
    x = as_float(value)
    if x is None:
        return MISSING
    if x < 1:
        return f"{x:.2f} s"
    if x < 60:
        return f"{x:.1f} s"
    total = round(x)
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {(total % 3600) // 60:02d} min"


def fmt_eps(value: Any) -> str:
    """A perturbation radius. Values that are k/255 with a long decimal form get the fraction too:
    ``0.1 -> '0.1'``, ``2/255 -> '0.007843 (2/255)'``."""
    x = as_float(value)
    if x is None:
        return MISSING if is_missing(value) else str(value)
    text = f"{x:.4g}"
    if x > 0 and len(f"{x:.10g}") > 6:
        k = x * 255.0
        if abs(k - round(k)) < 1e-6 and round(k) > 0:
            text = f"{x:.4g} ({Fraction(round(k), 255)})"
    return text


_NORMS = {
    "linf": "ℓ∞", "l_inf": "ℓ∞", "inf": "ℓ∞", "infinity": "ℓ∞", "l∞": "ℓ∞", "ℓ∞": "ℓ∞",
    "l2": "ℓ2", "l_2": "ℓ2", "2": "ℓ2", "ℓ2": "ℓ2",
    "l1": "ℓ1", "l_1": "ℓ1", "1": "ℓ1", "ℓ1": "ℓ1",
}


def fmt_norm(norm: Any) -> str:
    """A norm name (``'linf'``, ``'l2'``, ``np.inf``, ``2`` ...) in mathematical notation (``'ℓ∞'``)."""
    if is_missing(norm) and not (isinstance(norm, float) and math.isinf(norm)):
        return ""
    if isinstance(norm, (int, float, np.integer, np.floating)) and not isinstance(norm, bool):
        norm = "inf" if math.isinf(float(norm)) else f"{float(norm):g}"
    key = str(norm).strip().lower().replace(" ", "")
    return _NORMS.get(key, str(norm))


def stage_key(stage: Any) -> tuple[int, float | str]:
    """Sort key that puts the whole-model row (``'all'``) first and numbered stages after, in order."""
    if isinstance(stage, str) and stage.strip().lower() == "all":
        return (0, 0.0)
    x = as_float(stage)
    if x is None:
        return (2, str(stage))
    return (1, x)


def is_all_stage(stage: Any) -> bool:
    """True for the row that describes the whole model or cascade."""
    return isinstance(stage, str) and stage.strip().lower() == "all"


def stage_number(stage: Any) -> int | None:
    """A 1-based stage number, or ``None`` for ``'all'``/missing/unparseable stages."""
    x = as_float(stage)
    return None if x is None else round(x)


def to_jsonable(value: Any) -> Any:
    """``value`` converted recursively to plain JSON types.

    numpy scalars/arrays become Python numbers/lists, NaN/±inf/NA/NaT become ``None``, timestamps become
    ISO 8601 strings, paths become strings, mappings get string keys. The result always passes
    ``json.dumps(..., allow_nan=False)``.
    """
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, pd.DataFrame):
        return [to_jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (pd.Timestamp, _dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, _dt.timedelta)):
        return value.total_seconds()
    if isinstance(value, np.datetime64):
        return str(pd.Timestamp(value).isoformat())
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and other numpy-like scalars
        try:
            return to_jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)
