"""Pretraining heads and the view-masked multi-task loss (no language model involved).

Targets per clip (see :mod:`echosonar.encode.data`): study labels and normalised study
measurements, each with a 0/1 mask of what the clip's view can show. Masked entries contribute
exactly zero loss and zero gradient (PanEcho-style masked multi-task loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from echosonar.encode.data import MEASURE_KEYS
from echosonar.io.checkpoint import Pretrained
from echosonar.taxonomy import LABEL_KEYS


@dataclass
class HeadsConfig:
    """Shape of the pretraining heads (stored in the heads checkpoint)."""

    dim: int = 128
    label_keys: list[str] = field(default_factory=lambda: list(LABEL_KEYS))
    measure_keys: list[str] = field(default_factory=lambda: list(MEASURE_KEYS))


class PretrainHeads(Pretrained, nn.Module):
    """Linear heads on the encoder's tokens ``[B, 1 + N, D]``.

    * ``label``: global token -> ``[B, L]`` logits (bias set from label priors).
    * ``measure``: global token -> ``[B, K]`` normalised measurements (z-scores with the
      training-set ``measure_mean`` / ``measure_std`` buffers, saved with the heads).
    * ``recon``: grid token ``[..., D]`` -> mean RGB of its cell (masked-video pretraining).
    """

    checkpoint_kind = "clip_encoder_heads"
    config_class = HeadsConfig

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        d, n_l, n_m = config.dim, len(config.label_keys), len(config.measure_keys)
        self.label = nn.Linear(d, n_l)
        self.measure = nn.Linear(d, n_m)
        self.recon = nn.Linear(d, 3)
        self.register_buffer("measure_mean", torch.zeros(n_m))
        self.register_buffer("measure_std", torch.ones(n_m))

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        g = tokens[:, 0]
        return {"label_logits": self.label(g), "measure": self.measure(g)}

    @torch.no_grad()
    def init_from_data(self, labels: torch.Tensor, label_mask: torch.Tensor,
                       measures: torch.Tensor, measure_mask: torch.Tensor) -> None:
        """Label bias = logit of each label's prior among clips that can see it; measurement
        normalisation = masked mean/std; measurement bias 0 (the mean)."""
        n = label_mask.sum(0)
        p = ((labels * label_mask).sum(0) + 0.5) / (n + 1.0)  # smoothed; unseen labels -> 0.5
        p = p.clamp(1e-3, 1 - 1e-3)
        self.label.bias.copy_(torch.log(p / (1 - p)))
        nm = measure_mask.sum(0).clamp(min=1)
        mean = (measures * measure_mask).sum(0) / nm
        var = (((measures - mean) ** 2) * measure_mask).sum(0) / nm
        self.measure_mean.copy_(mean)
        self.measure_std.copy_(var.sqrt().clamp(min=1e-3))
        self.measure.bias.zero_()

    def normalise(self, measures: torch.Tensor) -> torch.Tensor:
        return (measures - self.measure_mean) / self.measure_std

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.measure_std + self.measure_mean


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over entries with ``mask`` = 1; masked entries give zero loss and gradient."""
    per = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def masked_huber(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 delta: float = 1.0) -> torch.Tensor:
    """Mean Huber loss over entries with ``mask`` = 1 (robust to heavy-tailed measurements)."""
    per = F.huber_loss(pred, target, reduction="none", delta=delta)
    return (per * mask).sum() / mask.sum().clamp(min=1.0)


def cell_targets(frames: torch.Tensor, grid_t: int, grid_s: int) -> torch.Tensor:
    """Mean RGB of each space-time cell: ``[B, T, 3, H, W]`` -> ``[B, grid_t, grid_s**2, 3]``."""
    x = frames.permute(0, 2, 1, 3, 4)                                  # [B, 3, T, H, W]
    cells = F.adaptive_avg_pool3d(x, (grid_t, grid_s, grid_s))         # [B, 3, t, s, s]
    return cells.flatten(3).permute(0, 2, 3, 1)


def random_cell_mask(b: int, grid_t: int, grid_s: int, ratio: float,
                     gen: torch.Generator | None = None) -> torch.Tensor:
    """Bool ``[B, grid_t, grid_s**2]``; exactly ``round(ratio * cells)`` cells True per clip."""
    n = grid_t * grid_s ** 2
    k = max(1, min(n - 1, int(math.floor(ratio * n + 0.5))))
    order = torch.rand(b, n, generator=gen).argsort(dim=1)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.view(b, grid_t, grid_s ** 2)


def multitask_loss(encoder: nn.Module, heads: PretrainHeads, batch: dict[str, torch.Tensor],
                   weights: dict[str, float], mask_ratio: float = 0.5,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total weighted loss and its parts for one batch.

    ``batch`` keys: ``frames`` [B, T, 3, H, W] in [0, 1], ``views`` [B], ``labels`` and
    ``label_mask`` [B, L], ``measures`` (raw) and ``measure_mask`` [B, K].
    ``weights`` keys: ``label``, ``measure``, ``mask_video`` (0 disables that term).
    """
    frames, views = batch["frames"], batch["views"]
    grid = encoder.grid(frames, views)
    out = heads(encoder.readout(grid, views))
    parts: dict[str, torch.Tensor] = {
        "label": masked_bce(out["label_logits"], batch["labels"], batch["label_mask"]),
        "measure": masked_huber(out["measure"], heads.normalise(batch["measures"]),
                                batch["measure_mask"]),
    }
    if weights.get("mask_video", 0.0) > 0:
        gt, gs = encoder.grid_t, encoder.grid_s
        cm = random_cell_mask(frames.shape[0], gt, gs, mask_ratio, gen).to(frames.device)
        pred = heads.recon(encoder.grid(frames, views, cell_mask=cm))    # [B, T', S, 3]
        target = (cell_targets(frames, gt, gs) - 0.5) * 4.0              # ~unit scale
        per = ((pred - target) ** 2).mean(-1)
        parts["mask_video"] = (per * cm).sum() / cm.sum().clamp(min=1)
    total = sum(weights.get(k, 0.0) * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
