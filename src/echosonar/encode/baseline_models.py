"""Classifier-baseline models over frozen features, and the study tensor set they read.

* :class:`ClipClassifier` — one clip's tokens ``[B, 1 + N, D]`` -> label logits ``[B, L]``;
  used by the single-view baseline (A4C clip only) and by PanEcho-style late fusion (the same
  per-clip model on every clip, probabilities averaged over a study's clips).
* :class:`FusionClassifier` — a whole study ``[B, C, 1 + N, D]`` with view ids ``[B, C]`` and a
  presence mask ``[B, C]`` -> ``[B, L]``: per-clip states with view embeddings, attention
  across clips, then per label an attention over clips weighting per-clip logits (missing clips
  masked everywhere), so each label can read the view that shows it.
* :class:`EvidenceFusionClassifier` — the same fusion that also reads what the VLM's label heads
  read: per clip the detector's structure tokens ``[B, C, K, D_det]`` and scores ``[B, C, K]``
  (projected, score-weighted pooled, added to the clip state), and per study the detector's
  measurements ``[B, M]`` as numbers (standardised with training statistics kept as buffers,
  presence bits, clipped; a linear term on the logits, as ``reason.measure_head``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from echosonar.detect.measure import (
    measurement_slots,
    measurement_values,
    slot_statistics,
    standardised_measurements,
)
from echosonar.io.checkpoint import Pretrained
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import CLASSIFIER_VIEWS, LABEL_KEYS

VIEW_ID = {v: i for i, v in enumerate(CLASSIFIER_VIEWS)}


def slot_names() -> list[str]:
    """``"VIEW:quantity"`` of every measurement slot, in :attr:`StudySet.measurements` order
    (``detect.measure.measurement_slots``); stored in an evidence checkpoint's config."""
    return [f"{v}:{q}" for v, q in measurement_slots()]


@dataclass
class StudySet:
    """Studies as padded tensors.

    Attributes:
        keys, splits: per study.
        tokens: float ``[S, C, 1 + N, D]`` (zeros where no clip).
        views: long ``[S, C]`` view ids (``CLASSIFIER_VIEWS`` index; 0 where no clip).
        present: bool ``[S, C]``.
        labels: float ``[S, L]`` in ``LABEL_KEYS`` order.
        structure_tokens: float ``[S, C, K, D_det]`` detector structure tokens per clip.
        structure_scores: float ``[S, C, K]`` detector presence probability per structure.
        measurements: float ``[S, M]`` the detector's raw measurement per
            ``measurement_slots()`` slot, NaN where not measured. Raw, not standardised: the
            model standardises with the training statistics it stores, so a set from any cache
            (e.g. the shifted one) is read with the statistics the model was trained with.
    """

    keys: list[str]
    splits: list[str]
    tokens: torch.Tensor
    views: torch.Tensor
    present: torch.Tensor
    labels: torch.Tensor
    structure_tokens: torch.Tensor
    structure_scores: torch.Tensor
    measurements: torch.Tensor

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, split: str) -> "StudySet":
        idx = [i for i, s in enumerate(self.splits) if s == split]
        return StudySet([self.keys[i] for i in idx], [self.splits[i] for i in idx],
                        *(t[idx] for t in (self.tokens, self.views, self.present, self.labels,
                                           self.structure_tokens, self.structure_scores,
                                           self.measurements)))


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
    st_shapes = {np.shape(v.structure_tokens) for s in studies for v in s.views}
    if len(st_shapes) != 1:
        raise ValueError(f"structure tokens differ in shape across the cache: "
                         f"{sorted(st_shapes)}")
    (n_struct, d_det), = st_shapes
    c_max = max(len(s.views) for s in studies)
    tokens = np.zeros((len(studies), c_max, n_tok, dim), np.float32)
    views = np.zeros((len(studies), c_max), np.int64)
    present = np.zeros((len(studies), c_max), bool)
    labels = np.zeros((len(studies), len(LABEL_KEYS)), np.float32)
    struct = np.zeros((len(studies), c_max, n_struct, d_det), np.float32)
    scores = np.zeros((len(studies), c_max, n_struct), np.float32)
    for i, s in enumerate(studies):
        for j, v in enumerate(s.views):
            tokens[i, j], views[i, j], present[i, j] = v.clip_tokens, VIEW_ID[v.view], True
            struct[i, j] = v.structure_tokens
            scores[i, j] = np.asarray(v.structure_scores, np.float32).reshape(n_struct)
        labels[i] = [float((s.labels or {}).get(k, 0)) for k in LABEL_KEYS]
    return StudySet([s.key for s in studies], [s.split or "" for s in studies],
                    torch.from_numpy(tokens), torch.from_numpy(views), torch.from_numpy(present),
                    torch.from_numpy(labels), torch.from_numpy(struct), torch.from_numpy(scores),
                    measurement_values(studies, measurement_slots()))


@dataclass
class BaselineModelConfig:
    """Shape of a baseline model (stored in its checkpoint)."""

    kind: str = "clip"            # "clip", "fusion" or "fusion_evidence"
    dim: int = 128                # input token width D
    hidden: int = 128
    heads: int = 4
    dropout: float = 0.2
    mix_layers: int = 1           # fusion: transformer layers across a study's clips
    labels: list[str] = field(default_factory=lambda: list(LABEL_KEYS))
    # fusion_evidence only (0 / empty: that input is not read)
    structures: int = 0           # K structure tokens per clip
    struct_dim: int = 0           # their width D_det
    slots: list[str] = field(default_factory=list)   # measurement slots read (slot_names())


def _init_bias(linear_bias: torch.Tensor, prior: torch.Tensor | None) -> None:
    if prior is not None:
        p = prior.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            linear_bias.copy_(torch.log(p / (1 - p)))


def _check_present(present: torch.Tensor) -> None:
    if not bool(present.any(1).all()):
        raise ValueError("every study needs at least one present clip")


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

    def clip_states(self, tokens: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """``tokens [B, C, 1+N, D]``, ``views [B, C]`` -> clip states ``[B, C, H]``."""
        rest = tokens[:, :, 1:].mean(2) if tokens.shape[2] > 1 else torch.zeros_like(
            tokens[:, :, 0])
        return self.clip(torch.cat([tokens[:, :, 0], rest], -1)) + self.view_embed(views)

    def forward(self, tokens: torch.Tensor, views: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        _check_present(present)
        return self.fuse(self.clip_states(tokens, views), present)

    def fuse(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Clip states ``x [B, C, H]`` and ``present [B, C]`` -> label logits ``[B, L]``."""
        pad = ~present
        for layer in self.mix:
            x = layer(x, src_key_padding_mask=pad)
        x = self.norm(x)                                             # [B, C, H]
        scores = self.score(x).masked_fill(pad[:, :, None], float("-inf"))
        weights = scores.softmax(dim=1)                              # [B, C, L] over clips
        return (weights * self.logit(x)).sum(1)


class EvidenceFusionClassifier(FusionClassifier):
    """:class:`FusionClassifier` that also reads the detector's evidence, as the VLM does.

    ``forward(tokens [B, C, 1+N, D], views [B, C], present [B, C], structure_tokens
    [B, C, K, D_det], structure_scores [B, C, K], measurements [B, M]) -> [B, L]``.

    * Structure tokens: per structure ``GELU(W LN(token) + w * score + type embedding)``,
      averaged over the clip's structures weighted by their scores (absent structures barely
      count), projected and added to the clip state before the cross-clip fusion.
    * Measurements (raw, NaN = missing): standardised with the training statistics in the
      buffers ``meas_mean``/``meas_std [M]`` (:meth:`fit_stats`, saved with the weights),
      clipped, plus presence bits, into a linear term added to the logits (as
      ``reason.measure_head``). A slot whose view has no present clip reads as missing, so hiding
      a view in training (token dropout) hides its numbers too.

    Both additions start at zero: a new model is exactly the clip-token fusion.
    """

    checkpoint_kind = "baseline_fusion_evidence"
    config_class = BaselineModelConfig

    def __init__(self, config: BaselineModelConfig, prior: torch.Tensor | None = None) -> None:
        super().__init__(config, prior)
        c, h = config, config.hidden
        self.struct_in: nn.Module | None = None
        if c.struct_dim > 0 and c.structures > 0:
            self.struct_in = nn.Sequential(nn.LayerNorm(c.struct_dim), nn.Linear(c.struct_dim, h))
            self.struct_score = nn.Linear(1, h, bias=False)
            self.struct_type = nn.Embedding(c.structures, h)
            nn.init.normal_(self.struct_type.weight, std=0.02)
            self.struct_out = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(h, h))
            nn.init.zeros_(self.struct_out[1].weight)
            nn.init.zeros_(self.struct_out[1].bias)
        m = len(c.slots)
        self.register_buffer("meas_mean", torch.zeros(m))
        self.register_buffer("meas_std", torch.ones(m))
        # which view each slot is read in (derived from the config, so not saved)
        self.register_buffer("slot_view", torch.tensor(
            [VIEW_ID[s.split(":", 1)[0]] for s in c.slots], dtype=torch.long), persistent=False)
        self.meas = nn.Linear(2 * m, len(c.labels)) if m else None
        if self.meas is not None:
            nn.init.zeros_(self.meas.weight)
            nn.init.zeros_(self.meas.bias)

    @torch.no_grad()
    def fit_stats(self, measurements: torch.Tensor) -> None:
        """Set ``meas_mean``/``meas_std`` from the training split's raw ``[S, M]`` values
        (nothing to set when the model reads no measurements)."""
        if not self.config.slots:
            return
        if measurements.shape[-1] != len(self.config.slots):
            raise ValueError(f"measurements have {measurements.shape[-1]} slots, the model "
                             f"reads {len(self.config.slots)}")
        mean, std = slot_statistics(measurements, self.meas_mean, self.meas_std)
        self.meas_mean.copy_(mean)
        self.meas_std.copy_(std)

    def structure_state(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``tokens [B, C, K, D_det]``, ``scores [B, C, K]`` -> ``[B, C, H]``."""
        assert self.struct_in is not None
        e = self.struct_in(tokens) + self.struct_score(scores[..., None]) + self.struct_type.weight
        w = scores.clamp(min=0)[..., None]
        pooled = (torch.nn.functional.gelu(e) * w).sum(2) / w.sum(2).clamp(min=1e-6)
        return self.struct_out(pooled)

    def measurement_inputs(self, measurements: torch.Tensor, views: torch.Tensor,
                           present: torch.Tensor) -> torch.Tensor:
        """Raw ``[B, M]`` -> ``[B, 2M]`` (z-scores, presence), slots of absent views missing."""
        if measurements.shape[-1] != len(self.config.slots):
            raise ValueError(f"measurements have {measurements.shape[-1]} slots, the model "
                             f"reads {len(self.config.slots)}")
        seen = ((views[:, :, None] == self.slot_view) & present[:, :, None]).any(1)  # [B, M]
        x = torch.where(seen, measurements, torch.full_like(measurements, float("nan")))
        return standardised_measurements(x, self.meas_mean, self.meas_std)

    def forward(self, tokens: torch.Tensor, views: torch.Tensor,  # type: ignore[override]
                present: torch.Tensor, structure_tokens: torch.Tensor,
                structure_scores: torch.Tensor, measurements: torch.Tensor) -> torch.Tensor:
        _check_present(present)
        x = self.clip_states(tokens, views)
        if self.struct_in is not None:
            x = x + self.structure_state(structure_tokens, structure_scores)
        logits = self.fuse(x, present)
        if self.meas is not None:
            logits = logits + self.meas(self.measurement_inputs(measurements, views, present))
        return logits
