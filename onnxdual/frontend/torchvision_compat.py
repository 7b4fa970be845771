"""Import onnx2torch next to a torchvision that cannot load, without side effects on other libraries (used by
frontend.convert only).

onnx2torch imports torchvision at import time, only for its NonMaxSuppression and RoiAlign converters.
PyPI's torchvision wheels carry a compiled extension built against CUDA; next to a CPU-only torch that
extension fails to register (``operator torchvision::nms does not exist``) and ``import torchvision``
raises. None of onnxdual's dual layers needs torchvision, so when -- and only when -- the real package
cannot be imported, a minimal stand-in whose functions raise a clear error if a model ever reaches them is
put into ``sys.modules`` *for the duration of onnx2torch's import only*: onnx2torch keeps its references to
the stand-in, and ``sys.modules`` is restored afterwards. Other libraries therefore see exactly the
torchvision they would see without onnxdual (``torch.onnx.export(dynamo=True)`` asks
``importlib.util.find_spec("torchvision")``, which a module without a spec breaks, ~40 logged tracebacks).
A working torchvision is always used as is.
"""

from __future__ import annotations

import importlib
import sys
import types

_STUB_ATTR = "__onnxdual_stub__"


def _unavailable(name: str, reason: str):
    def fail(*_args, **_kwargs):
        raise RuntimeError(f"torchvision.ops.{name} is unavailable in this environment ({reason}); "
                           "install a torchvision build that matches your torch to use this operator")

    fail.__name__ = name
    return fail


def _stand_in(reason: str) -> dict[str, types.ModuleType]:
    package = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    for fn in ("nms", "roi_align", "box_convert", "batched_nms"):
        setattr(ops, fn, _unavailable(fn, reason))
    package.ops = ops
    package.__version__ = "0+onnxdual.stub"
    setattr(package, _STUB_ATTR, True)
    setattr(package, "__onnxdual_stub_reason__", reason)
    return {"torchvision": package, "torchvision.ops": ops}


def _torchvision_modules() -> dict[str, types.ModuleType]:
    return {m: mod for m, mod in sys.modules.items() if m == "torchvision" or m.startswith("torchvision.")}


def import_onnx2torch() -> types.ModuleType:
    """``import onnx2torch``, through the stand-in when the installed torchvision cannot be imported. On
    return ``sys.modules`` holds no stand-in and no half-imported torchvision module."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    before = _torchvision_modules()
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # ImportError, RuntimeError (missing C++ ops), OSError (missing CUDA libs)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    else:
        return importlib.import_module("onnx2torch")
    for name in _torchvision_modules():  # what the failed import left half-initialised
        if name not in before:
            del sys.modules[name]
    stand_in = _stand_in(reason)
    sys.modules.update(stand_in)
    try:
        return importlib.import_module("onnx2torch")
    finally:
        for name, module in stand_in.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def torchvision_is_stand_in() -> bool:
    """Whether the loaded onnx2torch runs on the stand-in (its NMS and RoiAlign converters then fail)."""
    nms = sys.modules.get("onnx2torch.node_converters.nms")
    return bool(getattr(getattr(nms, "torchvision", None), _STUB_ATTR, False))
