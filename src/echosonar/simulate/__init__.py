"""EchoSim: physically motivated multi-view echo study simulator with ground truth.

Public API (see docs/notes/simulate.md)::

    from echosonar.simulate import sample_study, render_clip, write_study_set, study_rng
    spec = sample_study(study_rng(seed, index), cfg, index)   # measurements, labels, views
    frames, meta = render_clip(spec, "A4C", cfg, rng)          # uint8 [T,H,W] or [T,H,W,3]
    manifest = write_study_set("data/sim", cfg)                # DICOMs + manifest.json

Imports are lazy so ``import echosonar.simulate`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StudySpec", "build_record", "contact_sheet", "render_clip", "render_study",
           "resolve", "sample_study", "spec_for_index", "study_rng", "write_study_set"]

_WHERE = {
    "StudySpec": "spec", "sample_study": "spec", "spec_for_index": "spec", "study_rng": "spec",
    "render_clip": "render", "render_study": "writer", "build_record": "writer",
    "write_study_set": "writer", "contact_sheet": "preview", "resolve": "presets",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"echosonar.simulate.{_WHERE[name]}"), name)
    raise AttributeError(name)
