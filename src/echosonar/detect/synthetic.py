"""Synthetic detection data for tests and benchmarks: bright rectangles on speckle-like noise.

Each class k gets its own fill level (so a small network can tell classes apart), each clip a
random subset of classes (at most one box per class, like echo views), and boxes drift a little
from frame to frame like a beating chamber. Nothing here pretends to be anatomy.
"""

from __future__ import annotations

import numpy as np

from echosonar.schema import Clip, Study
from echosonar.taxonomy import STRUCTURES

K = len(STRUCTURES)


def synthetic_clip(rng: np.random.Generator, frames: int = 4, size: int = 32,
                   channels: int = 1, n_classes: int = 4, view: str = "A4C",
                   cm_per_px: float = 0.25) -> Clip:
    """One clip ``[frames, channels, size, size]`` with ground-truth boxes in pixels."""
    classes = rng.choice(K, size=min(n_classes, K), replace=False)
    img = rng.uniform(0.0, 0.2, size=(frames, channels, size, size)).astype(np.float32)
    boxes: list[dict[str, list[float]]] = [{} for _ in range(frames)]
    for k in classes:
        w, h = rng.uniform(0.2, 0.45, size=2) * size
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        for t in range(frames):
            s = 1.0 + 0.05 * np.sin(2 * np.pi * t / max(frames, 1))
            bw, bh = w * s, h * s
            bx0, by0 = float(np.clip(x0, 0, size - bw)), float(np.clip(y0, 0, size - bh))
            xa, ya = int(round(bx0)), int(round(by0))
            xb, yb = int(round(bx0 + bw)), int(round(by0 + bh))
            level = 0.35 + 0.6 * (k + 1) / K
            img[t, :, ya:yb, xa:xb] = level + rng.uniform(-0.05, 0.05, size=(channels, yb - ya,
                                                                            xb - xa))
            if channels == 3:
                img[t, k % 3, ya:yb, xa:xb] = 1.0  # a hue per class, like a colour jet
            boxes[t][STRUCTURES[k]] = [float(xa), float(ya), float(xb), float(yb)]
    return Clip(view=view, frames=np.clip(img, 0, 1), cm_per_px=cm_per_px,
                frame_times=np.arange(frames, dtype=np.float32) / 30.0, ed_index=0,
                es_index=frames // 2, source="synthetic", boxes=boxes)


def synthetic_studies(n: int, seed: int = 0, clips: int = 2, **kw) -> list[Study]:
    """``n`` studies of ``clips`` synthetic clips each (keyword arguments go to
    :func:`synthetic_clip`)."""
    rng = np.random.default_rng(seed)
    return [Study(key=f"syn{i:04d}", split="train",
                  clips=[synthetic_clip(rng, **kw) for _ in range(clips)]) for i in range(n)]
