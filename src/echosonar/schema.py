"""Data contracts between stages: the study-set manifest and the ingested, de-identified study.

Manifest (written by ``simulate``, read by ``ingest`` and the trainers) is plain JSON:

    manifest.json = {"version": 1, "preset": str, "seed": int, "studies": [StudyRecord, ...]}

with one ``StudyRecord`` per study (``to_dict``/``from_dict`` below). Paths inside a manifest are
relative to the manifest's folder.

An ingested ``Study`` holds tensors ready for the models; it never carries patient identifiers,
only the salted ``key``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from echosonar.taxonomy import CLASSIFIER_VIEWS

Box = list[float]  # [x0, y0, x1, y1] in pixels of the stored image (DICOM columns/rows)


@dataclass
class ClipRecord:
    """One cine clip of a study as written on disk.

    Attributes:
        view: one of ``taxonomy.VIEWS``.
        path: DICOM file, relative to the manifest folder.
        video_path: optional MP4/AVI copy, relative to the manifest folder.
        n_frames, fps: frame count and frame rate (frames per second).
        ed_frames, es_frames: indices of end-diastolic and end-systolic frames.
        cm_per_px: physical spacing (x and y are equal in our sector images).
        boxes: per frame, ``{structure: [x0, y0, x1, y1]}`` in pixels, only for structures seen.
        sector: ``{"apex": [x, y], "radius": r, "half_angle_deg": a}`` in pixels.
    """

    view: str
    path: str
    n_frames: int
    fps: float
    ed_frames: list[int]
    es_frames: list[int]
    cm_per_px: float
    boxes: list[dict[str, Box]] = field(default_factory=list)
    video_path: str | None = None
    sector: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipRecord":
        return cls(**d)


@dataclass
class StudyRecord:
    """Ground truth and targets for one study.

    Attributes:
        key: the study key (already a non-identifying string).
        split: "train", "val" or "test".
        labels: ``{label_key: 0/1}`` for every ``taxonomy.LABEL_KEYS``.
        measurements: ``{name: value}`` for every ``taxonomy.MEASUREMENTS``.
        clips: the clips present (views may be missing).
        reasoning: the target reasoning trace (text inside ``<think>``).
        report: ``{section: text}`` for every ``taxonomy.REPORT_SECTIONS``.
    """

    key: str
    split: str
    labels: dict[str, int]
    measurements: dict[str, Any]
    clips: list[ClipRecord]
    reasoning: str = ""
    report: dict[str, str] = field(default_factory=dict)

    @property
    def views(self) -> list[str]:
        return [c.view for c in self.clips]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clips"] = [c.to_dict() for c in self.clips]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudyRecord":
        d = dict(d)
        d["clips"] = [ClipRecord.from_dict(c) for c in d["clips"]]
        return cls(**d)


@dataclass
class Clip:
    """A preprocessed clip, ready for the detector and encoder.

    Attributes:
        view: a ``taxonomy.CLASSIFIER_VIEWS`` name (given, or predicted by the view classifier).
        view_conf: classifier confidence in [0, 1] (1.0 when the view was given).
        frames: float32 array ``[T, C, H, W]`` in [0, 1]; C = 1 for B-mode, 3 (RGB) for colour.
        cm_per_px: physical spacing of ``frames`` after crop and resize.
        frame_times: seconds from the first frame, shape ``[T]``.
        ed_index, es_index: frame indices (in ``frames``) of end-diastole and end-systole, or -1.
        source: a non-identifying label for the source file (e.g. "clip03.dcm").
        boxes: optional per-frame ground-truth boxes mapped into ``frames`` pixel coordinates.
    """

    view: str
    frames: np.ndarray
    cm_per_px: float
    frame_times: np.ndarray
    view_conf: float = 1.0
    ed_index: int = -1
    es_index: int = -1
    source: str = ""
    boxes: list[dict[str, Box]] | None = None

    def __post_init__(self) -> None:
        if self.view not in CLASSIFIER_VIEWS:
            raise ValueError(f"unknown view {self.view!r}")
        if self.frames.ndim != 4:
            raise ValueError(f"frames must be [T, C, H, W], got shape {self.frames.shape}")


@dataclass
class Study:
    """An ingested, de-identified study: ``key`` is a salted hash, never a patient ID."""

    key: str
    clips: list[Clip]
    labels: dict[str, int] | None = None
    measurements: dict[str, Any] | None = None
    reasoning: str | None = None
    report: dict[str, str] | None = None
    split: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def views(self) -> list[str]:
        return [c.view for c in self.clips]


@dataclass
class ViewFeatures:
    """Everything the language model reads about one clip (the output of detect + encode).

    Attributes:
        view: a ``taxonomy.CLASSIFIER_VIEWS`` name.
        clip_tokens: float32 ``[1 + N, D_enc]`` — global token first, then N space-time tokens.
        structure_tokens: float32 ``[K, D_det]`` with K = ``len(taxonomy.STRUCTURES)``, one row per
            structure class in taxonomy order, pooled over frames; zeros for absent structures.
        structure_scores: float32 ``[K]`` detector presence probability per structure.
        boxes: ``{structure: [x0, y0, x1, y1]}`` in 0..1 of the ultrasound region, end-diastole,
            for structures the detector found (score above its threshold).
        measurements: detector-derived measurements in physical units; keys follow
            ``taxonomy.MEASUREMENTS`` where the same quantity is estimated.
        view_conf: view-classifier confidence (1.0 when the view was given).
    """

    view: str
    clip_tokens: np.ndarray
    structure_tokens: np.ndarray
    structure_scores: np.ndarray
    boxes: dict[str, Box] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    view_conf: float = 1.0


@dataclass
class StudyFeatures:
    """A study as the language model sees it, plus (for training/eval) its ground truth."""

    key: str
    views: list[ViewFeatures]
    labels: dict[str, int] | None = None
    measurements: dict[str, Any] | None = None
    reasoning: str | None = None
    report: dict[str, str] | None = None
    split: str | None = None
