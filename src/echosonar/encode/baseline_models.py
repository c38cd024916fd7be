"""Classifier-baseline models over frozen clip tokens, and the study tensor set they read.

* :class:`ClipClassifier` — one clip's tokens ``[B, 1 + N, D]`` -> label logits ``[B, L]``;
  used by the single-view baseline (A4C clip only) and by PanEcho-style late fusion (the same
  per-clip model on every clip, probabilities averaged over a study's clips).
* :class:`FusionClassifier` — a whole study ``[B, C, 1 + N, D]`` with view ids ``[B, C]`` and a
  presence mask ``[B, C]`` -> ``[B, L]``: per-clip states with view embeddings, attention
  across clips, then per label an attention over clips weighting per-clip logits (missing clips
  masked everywhere), so each label can read the view that shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from echosonar.io.checkpoint import Pretrained
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import CLASSIFIER_VIEWS, LABEL_KEYS

VIEW_ID = {v: i for i, v in enumerate(CLASSIFIER_VIEWS)}


@dataclass
class StudySet:
    """Studies as padded tensors.

    Attributes:
        keys, splits: per study.
        tokens: float ``[S, C, 1 + N, D]`` (zeros where no clip).
        views: long ``[S, C]`` view ids (``CLASSIFIER_VIEWS`` index; 0 where no clip).
        present: bool ``[S, C]``.
        labels: float ``[S, L]`` in ``LABEL_KEYS`` order.
    """

    keys: list[str]
    splits: list[str]
    tokens: torch.Tensor
    views: torch.Tensor
    present: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, split: str) -> "StudySet":
        idx = [i for i, s in enumerate(self.splits) if s == split]
        return StudySet([self.keys[i] for i in idx], [self.splits[i] for i in idx],
                        self.tokens[idx], self.views[idx], self.present[idx], self.labels[idx])


def study_set(features: Iterable[StudyFeatures]) -> StudySet:
    """Pad a feature cache's studies to the largest clip count (studies without labels are
    kept with all-zero labels; callers evaluate only labelled splits)."""
    studies = list(features)
    if not studies:
        raise ValueError("no studies in the feature cache")
    shapes = {v.clip_tokens.shape for s in studies for v in s.views}
    if len(shapes) != 1:
        raise ValueError(f"clip tokens differ in shape across the cache: {sorted(shapes)}")
    (n_tok, dim), = shapes
    c_max = max(len(s.views) for s in studies)
    tokens = np.zeros((len(studies), c_max, n_tok, dim), np.float32)
    views = np.zeros((len(studies), c_max), np.int64)
    present = np.zeros((len(studies), c_max), bool)
    labels = np.zeros((len(studies), len(LABEL_KEYS)), np.float32)
    for i, s in enumerate(studies):
        for j, v in enumerate(s.views):
            tokens[i, j], views[i, j], present[i, j] = v.clip_tokens, VIEW_ID[v.view], True
        labels[i] = [float((s.labels or {}).get(k, 0)) for k in LABEL_KEYS]
    return StudySet([s.key for s in studies], [s.split or "" for s in studies],
                    torch.from_numpy(tokens), torch.from_numpy(views), torch.from_numpy(present),
                    torch.from_numpy(labels))


@dataclass
class BaselineModelConfig:
    """Shape of a baseline model (stored in its checkpoint)."""

    kind: str = "clip"            # "clip" or "fusion"
    dim: int = 128                # input token width D
    hidden: int = 128
    heads: int = 4
    dropout: float = 0.2
    mix_layers: int = 1           # fusion: transformer layers across a study's clips
    labels: list[str] = field(default_factory=lambda: list(LABEL_KEYS))


def _init_bias(linear_bias: torch.Tensor, prior: torch.Tensor | None) -> None:
    if prior is not None:
        p = prior.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            linear_bias.copy_(torch.log(p / (1 - p)))


class ClipClassifier(Pretrained, nn.Module):
    """``[B, 1 + N, D]`` -> ``[B, L]``: MLP on [global token, mean of space-time tokens]."""

    checkpoint_kind = "baseline_clip"
    config_class = BaselineModelConfig

    def __init__(self, config: BaselineModelConfig, prior: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.net = nn.Sequential(nn.LayerNorm(2 * c.dim), nn.Linear(2 * c.dim, c.hidden),
                                 nn.GELU(), nn.Dropout(c.dropout))
        self.out = nn.Linear(c.hidden, len(c.labels))
        _init_bias(self.out.bias, prior)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        rest = tokens[:, 1:].mean(1) if tokens.shape[1] > 1 else torch.zeros_like(tokens[:, 0])
        return self.out(self.net(torch.cat([tokens[:, 0], rest], -1)))


class FusionClassifier(Pretrained, nn.Module):
    """Study ``tokens [B, C, 1+N, D]``, ``views [B, C]``, ``present [B, C]`` -> ``[B, L]``.

    Per clip: an MLP on [global, mean space-time token] plus a view embedding gives a clip
    state; ``mix_layers`` transformer layers let clip states attend to each other (missing
    clips masked); then, per label, an attention over clips (softmax of a learned score over
    the present clips) weights per-clip logits. It contains late fusion as the special case of
    equal weights, and can learn which view shows which label.
    """

    checkpoint_kind = "baseline_fusion"
    config_class = BaselineModelConfig

    def __init__(self, config: BaselineModelConfig, prior: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = c = config
        h, n_lab = c.hidden, len(c.labels)
        self.clip = nn.Sequential(nn.LayerNorm(2 * c.dim), nn.Linear(2 * c.dim, h), nn.GELU(),
                                  nn.Dropout(c.dropout))
        self.view_embed = nn.Embedding(len(CLASSIFIER_VIEWS), h)
        nn.init.normal_(self.view_embed.weight, std=0.02)
        self.mix = nn.ModuleList(
            nn.TransformerEncoderLayer(h, c.heads, 2 * h, c.dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(c.mix_layers))
        self.norm = nn.LayerNorm(h)
        self.logit = nn.Linear(h, n_lab)
        self.score = nn.Linear(h, n_lab)
        nn.init.zeros_(self.score.weight)   # start as late fusion (equal weights)
        nn.init.zeros_(self.score.bias)
        _init_bias(self.logit.bias, prior)

    def forward(self, tokens: torch.Tensor, views: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        if not bool(present.any(1).all()):
            raise ValueError("every study needs at least one present clip")
        rest = tokens[:, :, 1:].mean(2) if tokens.shape[2] > 1 else torch.zeros_like(
            tokens[:, :, 0])
        x = self.clip(torch.cat([tokens[:, :, 0], rest], -1)) + self.view_embed(views)
        pad = ~present
        for layer in self.mix:
            x = layer(x, src_key_padding_mask=pad)
        x = self.norm(x)                                             # [B, C, H]
        scores = self.score(x).masked_fill(pad[:, :, None], float("-inf"))
        weights = scores.softmax(dim=1)                              # [B, C, L] over clips
        return (weights * self.logit(x)).sum(1)
