"""Shared tiny simulator configs and a small study set written once per session."""

from __future__ import annotations

import dataclasses

import pytest

from echosonar.config.sim import SimConfig
from echosonar.simulate.presets import resolve


def tiny_cfg(**kw) -> SimConfig:
    """Small, fast config: 64x64 images, 8 frames per cycle."""
    return resolve(dataclasses.replace(SimConfig(image_size=64, frames=8, studies=3), **kw))


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    """(out_dir, cfg, manifest_path) of a 3-study set written once."""
    from echosonar.simulate.writer import write_study_set

    cfg = tiny_cfg(seed=5, missing_view_prob=0.3)
    out = tmp_path_factory.mktemp("simset")
    path = write_study_set(out, cfg)
    return out, cfg, path
