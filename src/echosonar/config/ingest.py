"""Ingest config (owned by the ingest stage)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class IngestConfig:
    image_size: int = opt(64, "model input width and height after sector crop and resize")
    clip_len: int = opt(16, "frames per clip after temporal resampling")
    salt: str = opt("echosonar-default-salt", "salt for the study-key hash; set your own per site")
    workers: int = opt(1, "parallel worker processes")
    max_file_mb: float = opt(2048.0, "files larger than this are skipped as absurd")
