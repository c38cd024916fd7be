"""MP4 / AVI / MOV reader through PyAV: RGB uint8 frames and their presentation times.

Videos carry no study identifier, ultrasound region or spacing: studies are grouped by a manifest
or by folder (see :mod:`echosonar.ingest.study`), the sector is estimated from the pixels, and
spacing comes from a manifest when there is one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from echosonar.config.ingest import IngestConfig
from echosonar.ingest.errors import (
    CodecError,
    CorruptFileError,
    FrameCountError,
    HeaderError,
    IngestError,
    SizeError,
)
from echosonar.ingest.raw import RawClip, pixel_hash


def read_video(path: Path, cfg: IngestConfig) -> RawClip:
    """Decode every frame (up to ``max_frames``) of the first video stream."""
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types for bad containers
        raise CorruptFileError(path, f"cannot open video container ({type(e).__name__})") \
            from None
    try:
        return _read(container, path, cfg)
    except IngestError:
        raise
    except MemoryError:
        raise SizeError(path, "video does not fit in memory") from None
    except Exception as e:  # noqa: BLE001
        raise CodecError(path, f"cannot decode video ({type(e).__name__})") from None
    finally:
        container.close()


def _read(container, path: Path, cfg: IngestConfig) -> RawClip:  # noqa: ANN001
    if not container.streams.video:
        raise CorruptFileError(path, "container has no video stream")
    stream = container.streams.video[0]
    w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if w and h:
        for name, v in (("rows", h), ("columns", w)):
            if not cfg.min_side <= v <= cfg.max_side:
                raise SizeError(path, f"{v} {name}, outside [{cfg.min_side}, {cfg.max_side}]")
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    frames, times = [], []
    for frame in container.decode(stream):
        if len(frames) >= cfg.max_frames:
            raise SizeError(path, f"more than max_frames={cfg.max_frames} frames")
        frames.append(frame.to_ndarray(format="rgb24"))
        times.append(frame.time if frame.time is not None else math.nan)
    if not frames:
        raise FrameCountError(path, "zero frames")
    if len(frames) < cfg.min_frames:
        raise FrameCountError(path, f"{len(frames)} frame(s): a still image, not a cine (set "
                                    f"ingest.min_frames=1 to accept stills)")
    arr = np.stack(frames)
    warn: list[str] = []
    t = np.asarray(times, dtype=np.float64)
    if len(t) > 1 and (not np.isfinite(t).all() or (np.diff(t) <= 0).any()):
        t = np.full(len(t), math.nan)  # broken timestamps: fall back to the nominal rate
    if len(t) == 1:
        t = np.zeros(1)
    elif np.isnan(t).any():
        if not (math.isfinite(fps) and fps > 0):
            fps = cfg.default_fps
            warn.append(f"no frame timing in video; assumed {fps:g} fps")
        t = np.arange(len(arr)) / fps
    t = t - t[0]
    if len(t) > 1 and not 1 / 2000 <= float(np.median(np.diff(t))) <= 2.0:
        raise HeaderError(path, "implausible video frame rate")
    return RawClip(frames=arr, frame_times=t, source=path.name, pixel_hash=pixel_hash(arr),
                   order=(0, 0, path.name), warnings=warn)
