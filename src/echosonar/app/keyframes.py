"""Keyframe images for the report page: a clip frame with the detected structures drawn on it.

Frames arrive as the models see them (float ``[C, H, W]`` in [0, 1], C = 1 or 3, usually 64 px),
are upscaled for reading, and get one labelled rectangle per detected structure, in a colour that
is fixed per structure so the same structure has the same colour everywhere on the page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

from echosonar.taxonomy import STRUCTURE_INDEX, STRUCTURES

#: One colour per detector class (taxonomy order); chosen to stay distinct on grey speckle and
#: on red/blue colour Doppler.
PALETTE: tuple[str, ...] = (
    "#f5c518", "#38bdf8", "#a3e635", "#fb923c", "#e879f9", "#2dd4bf",
    "#facc15", "#f472b6", "#c4b5fd", "#f87171", "#60a5fa", "#fde68a",
)
assert len(PALETTE) >= len(STRUCTURES)


def structure_color(name: str) -> str:
    """Hex colour of a structure (grey for unknown names)."""
    i = STRUCTURE_INDEX.get(name)
    return PALETTE[i] if i is not None else "#cbd5e1"


def frame_to_rgb(frame: np.ndarray) -> np.ndarray:
    """float ``[C, H, W]`` in [0, 1] (C = 1 or 3), or ``[H, W]`` -> uint8 ``[H, W, 3]``."""
    a = np.asarray(frame, np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"keyframe must be [C, H, W] with C in (1, 3), got {a.shape}")
    a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def draw_keyframe(rgb: np.ndarray, boxes: Sequence[tuple[str, Sequence[float]]],
                  size: int = 288) -> bytes:
    """PNG bytes of ``rgb`` (uint8 ``[H, W, 3]``) resized to ``size`` wide with ``boxes``
    (``[(structure, [x0, y0, x1, y1] in 0..1)]``) drawn as labelled rectangles."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    h = max(1, round(size * img.height / img.width))
    img = img.resize((size, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(10, size // 24))
    except (TypeError, OSError):  # Pillow without FreeType: bitmap font
        font = ImageFont.load_default()
    lw = max(2, size // 160)
    for name, box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            continue
        xy = [x0 * size, y0 * h, x1 * size, y1 * h]
        color = structure_color(name)
        draw.rectangle(xy, outline=color, width=lw)
        tx, ty = xy[0] + lw, xy[1] + lw
        bx0, by0, bx1, by1 = draw.textbbox((tx, ty), name, font=font)
        draw.rectangle([bx0 - 2, by0 - 1, bx1 + 2, by1 + 1], fill=(15, 23, 42))
        draw.text((tx, ty), name, fill=color, font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
