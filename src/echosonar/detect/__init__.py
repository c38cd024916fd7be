"""Structure-aware cardiac detector: boxes, tracks, structure tokens and measurements.

Public API (imported lazily, so ``echosonar detect --help`` stays fast)::

    Detector, build_detector          # echosonar.detect.model
    ClipDetections, detect_clip, detect_study   # echosonar.detect.infer
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Detector": "echosonar.detect.model", "build_detector": "echosonar.detect.model",
    "ClipDetections": "echosonar.detect.infer", "detect_clip": "echosonar.detect.infer",
    "detect_study": "echosonar.detect.infer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'echosonar.detect' has no attribute {name!r}")
