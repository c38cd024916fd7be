"""The raw clip every reader returns, the salted hashing used for keys, and ``read_file``.

A :class:`RawClip` is what survives de-identification: decoded uint8 pixels, frame times, the
ultrasound region and spacing, and *hashed* identifiers. No header string is ever copied into it;
readers turn every header value they need into numbers or hashes on the spot.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.config.ingest import IngestConfig
from echosonar.ingest.errors import NotSupportedFileError, SizeError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".m4v", ".mkv", ".webm")
#: physical pixel size accepted from a header, cm per stored pixel (10 um .. 1 cm): echo images
#: span 5-30 cm in 100-2000 pixels; anything outside is a header error, not a scanner
SPACING_RANGE_CM = (0.001, 1.0)
#: largest x/y pixel-size ratio accepted (real scanners store near-square pixels)
MAX_SPACING_ANISOTROPY = 10.0


@dataclass
class RawClip:
    """A decoded clip before preprocessing.

    Attributes:
        frames: uint8 ``[N, H, W, C]``; C = 3 (RGB, already converted from YBR/palette) or 1.
        frame_times: float64 ``[N]``, seconds from the first frame, strictly increasing.
        source: a label for the file that reveals nothing from the user's disk (see
            :func:`source_label`); its basename only with ``ingest.keep_source_names``.
        study_key: salted hash of the StudyInstanceUID (DICOM), or None (video / unknown).
        instance_key: salted hash of the SOPInstanceUID, or None.
        pixel_hash: SHA-1 of the decoded frames (duplicate detection).
        region: ultrasound region ``(x0, y0, x1, y1)`` in pixels, end-exclusive, or None.
        spacing: ``(cm_per_px_x, cm_per_px_y)`` of the stored pixels, or None when unknown.
        heart_rate: beats per minute from the header, or None.
        order: sort key inside a study (series number, instance number, basename).
        warnings: PHI-free notes about repairs and assumptions.
        view, sector, boxes, ed_frames, es_frames: ground truth for simulated clips (manifest):
            view name, ``{"apex": [x, y], "radius": r, "half_angle_deg": a}``, per source frame
            ``{structure: [x0, y0, x1, y1]}``, end-diastolic/-systolic source frame indices.
    """

    frames: np.ndarray
    frame_times: np.ndarray
    source: str
    study_key: str | None = None
    instance_key: str | None = None
    pixel_hash: str = ""
    region: tuple[int, int, int, int] | None = None
    spacing: tuple[float, float] | None = None
    heart_rate: float | None = None
    order: tuple[Any, ...] = ()
    warnings: list[str] = field(default_factory=list)
    view: str | None = None
    sector: dict[str, Any] | None = None
    boxes: list[dict[str, list[float]]] | None = None
    ed_frames: list[int] = field(default_factory=list)
    es_frames: list[int] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def salted_hash(value: str, salt: str, n: int = 20) -> str:
    """Non-reversible key for an identifier: SHA-256 of ``salt`` + NUL + ``value``, hex, ``n`` chars.

    >>> salted_hash("1.2.3", "s") == salted_hash("1.2.3", "s") != salted_hash("1.2.3", "t")
    True
    """
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:n]


def source_label(path: str | os.PathLike, salt: str, position: int | None = None) -> str:
    """How ingest's outputs name a file: ``"file #<position> [<salted hash of its path>]"``
    (position 1-based in the sorted input list), never its name — file and folder names often
    carry patient names. The hash lets a site that knows its salt match a label to a file.

    >>> source_label("/data/DOE_JOHN/a.dcm", "s", 2).startswith("file #3 [")
    True
    """
    key = salted_hash("file:" + str(Path(path).resolve()), salt, 12)
    return f"file #{position + 1} [{key}]" if position is not None else f"file [{key}]"


def plausible_spacing(spacing: tuple[float, float] | None,
                      warnings: list[str]) -> tuple[float, float] | None:
    """``spacing`` (cm per stored pixel, x and y) when it is physically plausible, else None
    with a warning: non-finite, outside :data:`SPACING_RANGE_CM`, or pixels more than
    :data:`MAX_SPACING_ANISOTROPY` times longer than wide. A bad header value must not turn into
    absurd measurements (1e300 cm) downstream; the clip stays usable without physical size."""
    if spacing is None:
        return None
    dx, dy = (float(v) for v in spacing)
    lo, hi = SPACING_RANGE_CM
    if not all(np.isfinite(v) and lo <= v <= hi for v in (dx, dy)):
        warnings.append(f"physical spacing {dx:.3g} x {dy:.3g} cm/px is outside the plausible "
                        f"range {lo:g}-{hi:g} cm/px; ignored (no measurements in cm)")
        return None
    if max(dx, dy) > MAX_SPACING_ANISOTROPY * min(dx, dy):
        warnings.append(f"physical spacing {dx:.3g} x {dy:.3g} cm/px is implausibly anisotropic; "
                        "ignored (no measurements in cm)")
        return None
    return dx, dy


def pixel_hash(frames: np.ndarray) -> str:
    h = hashlib.sha1(np.ascontiguousarray(frames).data)
    h.update(str(frames.shape).encode())
    return h.hexdigest()


def check_file(path: Path, cfg: IngestConfig) -> int:
    """Existence and size checks shared by every reader; returns the size in bytes."""
    if not path.is_file():
        raise NotSupportedFileError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise NotSupportedFileError(path, "empty file (0 bytes)")
    if size > cfg.max_file_mb * 2**20:
        raise SizeError(path, f"file is {size / 2**20:.0f} MiB, above max_file_mb="
                              f"{cfg.max_file_mb:g}")
    return size


def sniff(path: Path) -> str:
    """'dicom' (preamble + DICM), 'video' (container magic or extension), or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "video"
    if head[:4] == b"\x1aE\xdf\xa3":  # Matroska / WebM
        return "video"
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    return "unknown"


def as_ingest_config(cfg: Any | None) -> IngestConfig:
    """Accept an ``EchoSonarConfig`` (uses ``.ingest``), an ``IngestConfig`` or None (defaults);
    invalid settings raise ``ValueError`` naming the field."""
    icfg = IngestConfig() if cfg is None else cfg.ingest if hasattr(cfg, "ingest") else cfg
    nums = (icfg.image_size, icfg.clip_len, icfg.min_frames, icfg.workers, icfg.max_file_mb,
            icfg.default_fps, icfg.max_side, icfg.min_side, icfg.max_frames, icfg.max_decoded_mb,
            icfg.view_min_conf, icfg.color_chroma, icfg.color_min_fraction)
    if not all(np.isfinite(float(v)) for v in nums):
        raise ValueError("ingest: numeric settings must be finite (no NaN or infinity)")
    checks = [
        (icfg.image_size >= 8, "image_size must be >= 8"),
        (icfg.clip_len >= 1, "clip_len must be >= 1"),
        (icfg.min_frames >= 1, "min_frames must be >= 1"),
        (icfg.temporal_window in ("clip", "cycle"), "temporal_window must be 'clip' or 'cycle'"),
        (icfg.temporal_interp in ("nearest", "linear"),
         "temporal_interp must be 'nearest' or 'linear'"),
        (icfg.cache_dtype in ("uint8", "float16"), "cache_dtype must be 'uint8' or 'float16'"),
        (bool(icfg.salt), "salt must not be empty"),
        (icfg.max_file_mb > 0 and icfg.default_fps > 0, "max_file_mb and default_fps must be > 0"),
        (8 <= icfg.image_size <= 1024, "image_size must be between 8 and 1024"),
        (icfg.clip_len <= 1024, "clip_len must be <= 1024"),
        (1 <= icfg.workers <= 256, "workers must be between 1 and 256"),
        (1 <= icfg.min_side <= icfg.max_side, "min_side must be >= 1 and <= max_side"),
        (icfg.min_frames <= icfg.max_frames, "min_frames must be <= max_frames"),
        (icfg.max_decoded_mb > 0, "max_decoded_mb must be > 0"),
        (0 < icfg.default_fps <= 1000, "default_fps must be between 0 and 1000"),
        (0.0 <= icfg.view_min_conf <= 1.0, "view_min_conf must be between 0 and 1"),
        (0.0 <= icfg.color_min_fraction <= 1.0, "color_min_fraction must be between 0 and 1"),
        (0.0 <= icfg.color_chroma <= 255.0, "color_chroma must be between 0 and 255"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"ingest.{msg}")
    return icfg


def read_file(path: str | os.PathLike, cfg: Any | None = None) -> RawClip:
    """Decode one DICOM or video file into a :class:`RawClip`.

    Raises an :class:`~echosonar.ingest.errors.IngestError` subclass with a specific reason for
    every kind of bad input (and only those).
    """
    from echosonar.ingest.dicom import read_dicom
    from echosonar.ingest.video import read_video

    icfg = as_ingest_config(cfg)
    p = Path(path)
    check_file(p, icfg)
    kind = sniff(p)
    if kind == "video":
        return read_video(p, icfg)
    return read_dicom(p, icfg, has_preamble=kind == "dicom")
