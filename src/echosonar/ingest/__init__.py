"""Ingest: DICOM/MP4/AVI files to de-identified, view-labelled, preprocessed clip tensors.

Public API (imported lazily so that ``echosonar --help`` stays fast)::

    read_file(path, cfg=None) -> RawClip            # decode one file; raises IngestError
    preprocess(raw, cfg=None) -> Clip                # crop, mask, resample, resize
    ingest_paths(paths, cfg=None, ...) -> (list[Study], list[(file, reason)])
    ingest_manifest(root, cfg=None, ...) -> list[Study]
    write_cache(studies, out_dir) / iter_cache(cache_dir, split=None) -> Iterator[Study]
    ViewClassifier, predict_views                    # view classifier (torch)

See docs/notes/ingest.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_file": "raw", "RawClip": "raw", "salted_hash": "raw",
    "preprocess": "preproc",
    "ingest_paths": "study", "ingest_manifest": "study", "iter_manifest": "study",
    "label_views": "study", "summarize": "study",
    "write_cache": "cache", "iter_cache": "cache", "CacheWriter": "cache", "CacheError": "cache",
    "load_study": "cache", "read_index": "cache",
    "ViewClassifier": "view_model", "predict_views": "view_model", "predict_probs": "view_model",
    "IngestError": "errors", "NotSupportedFileError": "errors", "CorruptFileError": "errors",
    "NotImageError": "errors", "ModalityError": "errors", "FrameCountError": "errors",
    "SizeError": "errors", "CodecError": "errors", "PixelValueError": "errors",
    "HeaderError": "errors", "DuplicateError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"echosonar.ingest.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'echosonar.ingest' has no attribute {name!r}")
