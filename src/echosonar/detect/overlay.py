"""Overlays: detected boxes drawn on the clip frames, as a PNG (end-diastole of every clip, side
by side) or an MP4 (every frame, tracks, clips side by side). Written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echosonar.detect.infer import ClipDetections
from echosonar.io.atomic import atomic_path
from echosonar.schema import Clip
from echosonar.taxonomy import STRUCTURES

#: one colour per structure class (taxonomy order), chosen to stay distinct on grey images
COLORS: dict[str, tuple[int, int, int]] = dict(zip(STRUCTURES, [
    (255, 80, 80), (80, 200, 255), (255, 210, 60), (120, 255, 120), (255, 120, 255),
    (255, 160, 60), (160, 120, 255), (255, 255, 255), (60, 255, 220), (255, 60, 160),
    (200, 255, 60), (60, 120, 255)], strict=True))


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` float 0..1 or uint8 -> uint8 ``[H, W, 3]``."""
    f = np.asarray(frame)
    f = f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32)
    if f.shape[0] == 1:
        f = np.repeat(f, 3, 0)
    return (np.clip(f.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def draw_boxes(frame: np.ndarray, boxes: dict[str, list[float]], scale: int = 4,
               title: str = "", scores: dict[str, float] | None = None):
    """A PIL image of ``frame`` ([C, H, W]) upscaled ``scale`` times with ``boxes`` (0..1)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_to_rgb(frame))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(img)
    w, h = img.size
    for name, b in boxes.items():
        c = COLORS[name]
        x0, y0, x1, y1 = b[0] * w, b[1] * h, b[2] * w, b[3] * h
        d.rectangle([x0, y0, x1, y1], outline=c, width=max(1, scale // 2))
        label = name if scores is None else f"{name} {scores.get(name, 0):.2f}"
        d.text((x0 + 2, y0 + 1), label, fill=c)
    if title:
        d.text((3, h - 12), title, fill=(255, 255, 0))
    return img


def _tile(images: list) -> object:
    from PIL import Image

    w = sum(i.width for i in images) + 4 * (len(images) - 1)
    h = max(i.height for i in images)
    out = Image.new("RGB", (w + (w % 2), h + (h % 2)))
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + 4
    return out


def overlay_png(clips: list[Clip], dets: list[ClipDetections], path: str | Path,
                scale: int = 4) -> Path:
    """End-diastolic frame of each clip with its present structures' boxes, side by side."""
    images = []
    for c, d in zip(clips, dets, strict=True):
        scores = {s: float(d.clip_scores[k]) for k, s in enumerate(STRUCTURES)}
        images.append(draw_boxes(c.frames[d.ed_index], d.ed_boxes, scale,
                                 f"{d.view} ED f{d.ed_index}", scores))
    path = Path(path)
    with atomic_path(path) as tmp:
        _tile(images).save(tmp, format="PNG")
    return path


def overlay_mp4(clips: list[Clip], dets: list[ClipDetections], path: str | Path,
                scale: int = 4, fps: float = 15.0) -> Path:
    """Every frame with the tracked boxes of present structures; clips side by side (shorter
    clips loop)."""
    import av

    n = max(c.frames.shape[0] for c in clips)
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as box:
            stream = None
            for t in range(n):
                imgs = []
                for c, d in zip(clips, dets, strict=True):
                    i = t % c.frames.shape[0]
                    boxes = {s: [float(v) for v in tr[i]] for s, tr in d.tracks.items()}
                    imgs.append(draw_boxes(c.frames[i], boxes, scale, f"{d.view} f{i}"))
                frame = np.asarray(_tile(imgs))
                if stream is None:
                    stream = box.add_stream("libx264", rate=int(round(fps)))
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    box.mux(p)
            if stream is not None:
                for p in stream.encode():
                    box.mux(p)
    return path
