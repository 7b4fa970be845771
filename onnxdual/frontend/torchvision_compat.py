"""Make onnx2torch importable where the installed torchvision cannot load (used by frontend.convert only).

onnx2torch imports torchvision at import time, only for its NonMaxSuppression and RoiAlign converters.
PyPI's torchvision wheels carry a compiled extension built against CUDA; next to a CPU-only torch that
extension fails to register (``operator torchvision::nms does not exist``) and ``import torchvision``
raises. None of onnxdual's dual layers needs torchvision, so when -- and only when -- the real package
cannot be imported we register a minimal stand-in whose three functions raise a clear error if a model
ever reaches them. A working torchvision is always used as is.
"""

from __future__ import annotations

import sys
import types

_STUB_ATTR = "__onnxdual_stub__"


def _unavailable(name: str, reason: str):
    def fail(*_args, **_kwargs):
        raise RuntimeError(f"torchvision.ops.{name} is unavailable in this environment ({reason}); "
                           "install a torchvision build that matches your torch to use this operator")

    fail.__name__ = name
    return fail


def ensure_torchvision_importable() -> bool:
    """Import torchvision, or install the stand-in. Returns True when the real package is in use."""
    existing = sys.modules.get("torchvision")
    if existing is not None:
        return not getattr(existing, _STUB_ATTR, False)
    try:
        import torchvision  # noqa: F401
        return True
    except Exception as exc:  # ImportError, RuntimeError (missing C++ ops), OSError (missing CUDA libs)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    package = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    for fn in ("nms", "roi_align", "box_convert", "batched_nms"):
        setattr(ops, fn, _unavailable(fn, reason))
    package.ops = ops
    package.__version__ = "0+onnxdual.stub"
    setattr(package, _STUB_ATTR, True)
    setattr(package, "__onnxdual_stub_reason__", reason)
    sys.modules["torchvision"] = package
    sys.modules["torchvision.ops"] = ops
    return False
