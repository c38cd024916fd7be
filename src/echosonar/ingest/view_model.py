"""View classifier: a small 2-D CNN applied to a few frames of a clip, pooled over time.

Input: ``n_frames`` frames sampled evenly across the clip, as float ``[B, F, 3, S, S]`` in [0, 1]
(B-mode is replicated to three channels, so colour Doppler keeps its colour cue). Each frame goes
through a 4x4 patchify stem and three conv blocks (GroupNorm + ReLU; S/4, S/8, S/16) and global
average pooling; the per-frame
features are pooled over time by mean and standard deviation (the latter carries motion), then a
linear head gives logits over ``config.classes`` (``taxonomy.CLASSIFIER_VIEWS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echosonar.config.ingest import ViewModelConfig
from echosonar.io.checkpoint import Pretrained
from echosonar.schema import Clip


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(True))


class ViewClassifier(nn.Module, Pretrained):
    """``forward(x [B, F, 3, S, S]) -> logits [B, len(classes)]``."""

    checkpoint_kind: ClassVar[str] = "view-classifier"
    config_class: ClassVar[type] = ViewModelConfig

    def __init__(self, config: ViewModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ViewModelConfig()
        w = list(self.config.widths)
        g0 = 8 if w[0] % 8 == 0 else 1
        # patchify stem (4x4, stride 4): cheap on CPU, and speckle detail finer than 4 px does
        # not tell views apart; then conv blocks at S/4, S/8, S/16
        layers: list[nn.Module] = [nn.Conv2d(3, w[0], 4, 4, bias=False), nn.GroupNorm(g0, w[0]),
                                   nn.ReLU(True)]
        cin = w[0]
        for i, c in enumerate(w[1:]):
            layers.append(_block(cin, c, 1 if i == 0 else 2))
            cin = c
        self.backbone = nn.Sequential(*layers)
        self.drop = nn.Dropout(self.config.dropout)
        self.head = nn.Linear(2 * cin, len(self.config.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f = x.shape[:2]
        z = self.backbone((x.flatten(0, 1) - 0.5) * 4.0).mean(dim=(2, 3)).view(b, f, -1)
        pooled = torch.cat([z.mean(1), z.std(1, unbiased=False) if f > 1 else z[:, 0] * 0], 1)
        return self.head(self.drop(pooled))


def frame_indices(t: int, n: int, offset: float = 0.5) -> np.ndarray:
    """``n`` indices spread evenly over ``t`` frames; ``offset`` in [0, 1) shifts them in time.

    >>> frame_indices(16, 4).tolist()
    [2, 6, 10, 14]
    """
    return np.minimum(((np.arange(n) + offset) * t / n).astype(int), t - 1)


def clip_input(frames: np.ndarray, n: int, size: int, offset: float = 0.5) -> torch.Tensor:
    """One clip ``[T, C, H, W]`` (uint8 or float in [0, 1]) -> float ``[n, 3, size, size]``."""
    sel = np.asarray(frames)[frame_indices(frames.shape[0], n, offset)]
    x = torch.from_numpy(np.ascontiguousarray(sel))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return x.contiguous()


@torch.no_grad()
def predict_views(model: ViewClassifier, clips: Sequence[Clip | np.ndarray],
                  batch_size: int = 64) -> list[tuple[str, float]]:
    """``[(view, confidence)]`` per clip (confidence = softmax probability of that view)."""
    model.eval()
    cfg = model.config
    out: list[tuple[str, float]] = []
    device = next(model.parameters()).device
    for i in range(0, len(clips), batch_size):
        chunk = clips[i:i + batch_size]
        x = torch.stack([clip_input(c.frames if isinstance(c, Clip) else c, cfg.n_frames,
                                    cfg.image_size) for c in chunk]).to(device)
        p = model(x).softmax(-1)
        conf, idx = p.max(-1)
        out += [(cfg.classes[int(k)], float(v)) for k, v in zip(idx, conf, strict=True)]
    return out
