"""Scanner presets and config validation.

A preset is a set of scanner fields of :class:`~echosonar.config.sim.SimConfig`. ``default`` is
the config's own defaults; ``shifted`` is a different "scanner": lower probe frequency (coarser
speckle), deeper and narrower sector, other gain and dynamic range, more noise, a higher frame
rate (more frames per cycle) and a larger image. :func:`resolve` applies the preset to every field
the user left at its default value, so ``--preset shifted --set sim.noise_db=-30`` keeps -30.
"""

from __future__ import annotations

import dataclasses

from echosonar.config.sim import SimConfig
from echosonar.taxonomy import VIEWS

PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "shifted": {
        "probe_mhz": 2.0,
        "depth_scale": 1.15,
        "half_angle_deg": 30.0,
        "gain_db": 4.0,
        "dynamic_range_db": 60.0,
        "noise_db": -32.0,
        "frames": 20,
        "image_size": 128,
        "speckle_corr": 0.6,
        "dropout": 0.7,
    },
}


class SimConfigError(ValueError):
    """A simulator option is invalid."""


def resolve(cfg: SimConfig) -> SimConfig:
    """Validate ``cfg`` and apply its preset to fields still at their default values."""
    if cfg.preset not in PRESETS:
        raise SimConfigError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    defaults = SimConfig()
    changes = {k: v for k, v in PRESETS[cfg.preset].items()
               if getattr(cfg, k) == getattr(defaults, k)}
    out = dataclasses.replace(cfg, **changes)
    validate(out)
    return out


def validate(cfg: SimConfig) -> None:
    """Raise :class:`SimConfigError` naming the first invalid field."""
    if cfg.preset not in PRESETS:
        raise SimConfigError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    if cfg.studies < 0:
        raise SimConfigError(f"sim.studies must be >= 0, got {cfg.studies}")
    if cfg.workers < 1:
        raise SimConfigError(f"sim.workers must be >= 1, got {cfg.workers}")
    if not 4 <= cfg.frames <= 256:
        raise SimConfigError(f"sim.frames must be in 4..256, got {cfg.frames}")
    if not 48 <= cfg.image_size <= 1024:
        raise SimConfigError(f"sim.image_size must be in 48..1024, got {cfg.image_size}")
    for name in ("views", "required_views"):
        for v in getattr(cfg, name):
            if v not in VIEWS:
                raise SimConfigError(f"sim.{name}: unknown view {v!r}; known views: "
                                     f"{', '.join(VIEWS)}")
    if not cfg.views:
        raise SimConfigError("sim.views is empty")
    if not set(cfg.required_views) <= set(cfg.views):
        raise SimConfigError(f"sim.required_views {cfg.required_views} must be a subset of "
                             f"sim.views {cfg.views}")
    for f in dataclasses.fields(cfg):
        if f.name.startswith("prev_") or f.name in ("missing_view_prob", "borderline_prob",
                                                    "dropout", "speckle_corr"):
            val = getattr(cfg, f.name)
            if not 0.0 <= val <= 1.0:
                raise SimConfigError(f"sim.{f.name} is a probability and must be in 0..1, "
                                     f"got {val}")
    fr = cfg.split_fractions
    if len(fr) != 3 or any(x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise SimConfigError(f"sim.split_fractions must be 3 non-negative numbers summing to 1 "
                             f"(train, val, test), got {fr}")
    if not 0.5 <= cfg.probe_mhz <= 15:
        raise SimConfigError(f"sim.probe_mhz must be in 0.5..15, got {cfg.probe_mhz}")
    if not 0.5 <= cfg.depth_scale <= 2:
        raise SimConfigError(f"sim.depth_scale must be in 0.5..2, got {cfg.depth_scale}")
    if not 15 <= cfg.half_angle_deg <= 45:
        raise SimConfigError(f"sim.half_angle_deg must be in 15..45, got {cfg.half_angle_deg}")
    if not 10 <= cfg.dynamic_range_db <= 100:
        raise SimConfigError(f"sim.dynamic_range_db must be in 10..100, "
                             f"got {cfg.dynamic_range_db}")
    if cfg.quality_spread < 0 or cfg.jitter < 0:
        raise SimConfigError("sim.quality_spread and sim.jitter must be >= 0")
