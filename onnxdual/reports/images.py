"""Input images as inline PNG data URIs (``data:image/png;base64,...``), so a report that shows examples
stays one file that needs nothing else: the clean input, PGD's adversarial and their difference.

PNGs are encoded with matplotlib's Agg writer (already a report dependency); nothing is scaled here, the
page enlarges the pixels with CSS (``image-rendering: pixelated``).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib.image import imsave

#: the smallest side (pixels) of an input drawn as an image; smaller or other shapes are not images
MIN_SIDE = 4


def as_image(array: Any) -> np.ndarray | None:
    """One example as ``(H, W)`` (grey) or ``(H, W, 3)`` (colour) floats, or ``None`` when its shape is not
    an image's: ``(H, W)``, ``(1, H, W)``, ``(3, H, W)`` or ``(H, W, 1 or 3)``, leading batch axes of size 1
    dropped."""
    a = np.asarray(array, dtype=float)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and min(a.shape[1:]) >= MIN_SIDE:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2 and min(a.shape) >= MIN_SIDE:
        return a
    if a.ndim == 3 and a.shape[-1] == 3 and min(a.shape[:2]) >= MIN_SIDE:
        return a
    return None


def png_data_uri(image: np.ndarray, vmin: float, vmax: float, cmap: str = "gray") -> str:
    """``image`` (from :func:`as_image`) as a PNG data URI, values mapped linearly from [vmin, vmax]."""
    span = vmax - vmin if vmax > vmin else 1.0
    buf = io.BytesIO()
    if image.ndim == 3:
        imsave(buf, np.clip((image - vmin) / span, 0.0, 1.0), format="png")
    else:
        imsave(buf, image, vmin=vmin, vmax=vmin + span, cmap=cmap, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def adversarial_pair(clean: Any, adversarial: Any) -> dict[str, Any] | None:
    """Data URIs of a clean input, its adversarial (one shared value range, so they compare) and their
    difference (grey is none; the range is the largest change), with that largest change; ``None`` when
    the input is not an image."""
    x, adv = as_image(clean), as_image(adversarial)
    if x is None or adv is None or x.shape != adv.shape:
        return None
    lo, hi = float(min(x.min(), adv.min())), float(max(x.max(), adv.max()))
    delta = adv - x
    change = float(np.abs(delta).max())
    diff = delta.mean(axis=-1) if delta.ndim == 3 else delta
    return {"clean": png_data_uri(x, lo, hi), "adversarial": png_data_uri(adv, lo, hi),
            "difference": png_data_uri(diff, -change or -1.0, change or 1.0, cmap="RdBu_r"),
            "change": change, "width": x.shape[1], "height": x.shape[0]}
