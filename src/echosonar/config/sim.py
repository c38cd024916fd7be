"""Simulator config (owned by the simulate stage)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class SimConfig:
    studies: int = opt(20, "number of studies to write")
    preset: str = opt("default", "scanner preset: 'default' or 'shifted'")
    seed: int = opt(0, "random seed; the same seed gives the same studies")
    frames: int = opt(16, "frames per clip (about one heart cycle)")
    image_size: int = opt(112, "rendered image width and height, pixels")
    missing_view_prob: float = opt(0.1, "probability that a non-A4C view is missing from a study")
    write_mp4: bool = opt(False, "also write an MP4 copy of each clip")
    split_fractions: list[float] = opt([0.7, 0.1, 0.2], "train/val/test fractions of studies")
    workers: int = opt(1, "worker processes for rendering")
