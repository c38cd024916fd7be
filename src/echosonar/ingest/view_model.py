"""View classifier: a small 2-D CNN applied to a few frames of a clip, pooled over time.

Input: ``n_frames`` frames sampled evenly across the clip, as float ``[B, F, 3, S, S]`` in [0, 1]
(B-mode is replicated to three channels, so colour Doppler keeps its colour cue). Each frame goes
through a 4x4 patchify stem and three conv blocks (GroupNorm + ReLU; S/4, S/8, S/16) and global
average pooling; the per-frame
features are pooled over time by mean and standard deviation (the latter carries motion), then a
linear head gives logits over ``config.classes`` (``taxonomy.CLASSIFIER_VIEWS``).

Colour prior: ingest has already decided from the pixels whether a clip is colour Doppler (it
keeps 3 channels) or B-mode (1 channel). With ``channel_prior`` the classifier only chooses among
the views consistent with that decision (plus OTHER), so it never confuses A4C with A4C_COLOR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echosonar.config.ingest import ViewModelConfig
from echosonar.io.checkpoint import Pretrained
from echosonar.schema import Clip
from echosonar.taxonomy import COLOR_VIEWS, OTHER_VIEW


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(True))


class ViewClassifier(nn.Module, Pretrained):
    """``forward(x [B, F, 3, S, S]) -> logits [B, len(classes)]``."""

    checkpoint_kind: ClassVar[str] = "view-classifier"
    config_class: ClassVar[type] = ViewModelConfig
    #: the out-of-distribution guard's statistics (:mod:`echosonar.ingest.view_ood`), loaded
    #: from ``ood_stats.safetensors`` next to the weights; None when the folder has none
    ood: Any = None

    @classmethod
    def from_pretrained(cls, directory: Any, map_location: str = "cpu",
                        ood: bool = True) -> ViewClassifier:
        """The checkpoint in ``directory``; with ``ood``, its OOD statistics too (a malformed
        or mismatched statistics file is an error, never silently ignored)."""
        from echosonar.ingest.view_ood import load_ood

        model = super().from_pretrained(directory, map_location)
        model.ood = load_ood(directory, model.config.widths) if ood else None
        return model

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

    def allowed(self, is_color: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` bool: colour clips -> colour views or OTHER; grey -> B-mode views or OTHER."""
        kinds = torch.tensor([0 if c == OTHER_VIEW else 1 if c in COLOR_VIEWS else 2
                              for c in self.config.classes], device=is_color.device)
        col = is_color.view(-1, 1).bool()
        return (kinds == 0) | ((kinds == 1) & col) | ((kinds == 2) & ~col)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, 2 * widths[-1]]``: per-frame CNN features pooled over
        time by mean and standard deviation (what the head reads; the OOD guard's space)."""
        b, f = x.shape[:2]
        z = self.backbone((x.flatten(0, 1) - 0.5) * 4.0).mean(dim=(2, 3)).view(b, f, -1)
        return torch.cat([z.mean(1), z.std(1, unbiased=False) if f > 1 else z[:, 0] * 0], 1)

    def forward(self, x: torch.Tensor, is_color: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, K]``; with ``is_color`` ``[B]`` and ``config.channel_prior``, views that
        contradict ingest's colour decision get a logit of -1e4."""
        logits = self.head(self.drop(self.embed(x)))
        if is_color is not None and self.config.channel_prior:
            logits = logits.masked_fill(~self.allowed(is_color), -1e4)
        return logits


def frame_indices(t: int, n: int, offset: float = 0.5) -> np.ndarray:
    """``n`` indices spread evenly over ``t`` frames; ``offset`` in [0, 1) shifts them in time.

    >>> frame_indices(16, 4).tolist()
    [2, 6, 10, 14]
    """
    return np.minimum(((np.arange(n) + offset) * t / n).astype(int), t - 1)


def clip_input(frames: np.ndarray, n: int, size: int, offset: float = 0.5,
               normalize: bool = True) -> torch.Tensor:
    """One clip ``[T, C, H, W]`` (uint8 or float in [0, 1]) -> float ``[n, 3, size, size]``.

    ``normalize`` divides by the clip's 99th percentile of imaged (non-black) pixels, so overall
    gain, which differs between scanners and presets, does not decide the view.
    """
    sel = np.asarray(frames)[frame_indices(frames.shape[0], n, offset)]
    x = torch.from_numpy(np.ascontiguousarray(sel))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    if normalize:
        lit = x[x > 0.02]
        if lit.numel() > 16:
            x = (x / torch.quantile(lit, 0.99).clamp(min=0.1)).clamp(0, 1)
    return x.contiguous()


@torch.no_grad()
def predict_probs(model: ViewClassifier, clips: Sequence[Clip | np.ndarray],
                  batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities ``[N, len(model.config.classes)]`` for clips or frame arrays."""
    model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(clips), batch_size):
        arrs = [c.frames if isinstance(c, Clip) else c for c in clips[i:i + batch_size]]
        x = torch.stack([clip_input(a, cfg.n_frames, cfg.image_size, normalize=cfg.normalize)
                         for a in arrs]).to(device)
        col = torch.tensor([a.shape[1] == 3 for a in arrs], device=device)
        out.append(model(x, col).softmax(-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(cfg.classes)), np.float32)


def predict_views(model: ViewClassifier, clips: Sequence[Clip | np.ndarray],
                  batch_size: int = 64) -> list[tuple[str, float]]:
    """``[(view, confidence)]`` per clip (confidence = softmax probability of that view)."""
    p = predict_probs(model, clips, batch_size)
    return [(model.config.classes[int(k)], float(p[i, k])) for i, k in enumerate(p.argmax(1))]
