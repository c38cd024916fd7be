"""Out-of-distribution guard: is this clip like the cardiac views the view classifier learnt?

Every model in EchoSonar is trained on EchoSim; a lymph node, an obstetric scan or a CT slice
saved as an ultrasound DICOM must never be analysed as a heart, and a real echo unlike anything in
training must be flagged. The guard scores each clip with **multi-layer Mahalanobis distances**
(Lee et al., NeurIPS 2018) in the view classifier's own feature spaces:

* for each of :data:`LAYERS` — the patchify stem and the three conv blocks, summarised per
  frame by the spatial mean and standard deviation of every channel (texture and layout:
  speckle, sector, dark cavities) and averaged over frames, plus ``pen``, the penultimate
  features the head reads (:meth:`ViewClassifier.embed`) — class-conditional Gaussians with one
  shared covariance are fitted on the training clips of each cardiac view (clean and under the
  training augmentation, i.e. what the classifier was taught);
* a clip's distance to a view is the mean over layers of its Mahalanobis distance divided by
  that layer's median distance on clean held-out clips; its score is the distance to the
  nearest view allowed by ingest's colour decision. ``OTHER`` is not a class of the guard: a
  clip is in distribution only when it is close to a *cardiac* view.

The low layers carry most of the separation (measured on pydicom's real files, see
docs/REAL_ECHO.md: for the classifier trained without domain randomisation the penultimate
layer alone put the real A4C cine farther from the views than CT and lymph-node images, while
the stem and first blocks put every non-cardiac file beyond both). The **energy score** (Liu et al., NeurIPS
2020; ``-logsumexp`` of the allowed cardiac logits) is reported beside it for comparison.

Two thresholds, fitted on held-out simulated clips (the ``val`` split, plus any extra
calibration set, e.g. a freshly simulated one), turn a score into a level: ``warn_at`` = the
split-conformal ``1 - warn_alpha`` threshold (``warn_alpha`` 2 %) of the held-out *studies'*
farthest clips, so at most 2 % of simulated studies like them are warned (and their findings
withheld) — a rate, unlike the farthest of a few hundred clips times a margin (the rule until
2026-12-06, 2.19 vs 2.64 for two training seeds), that stays put when the classifier is
retrained; and ``reject_at`` = the ``reject_quantile`` (99.5 %) of held-out clips under the
training augmentation times ``reject_margin`` (1.1): the farthest the classifier's own domain
randomisation reaches, with a margin. ``in`` < ``warn_at`` <= ``unusual`` < ``reject_at`` <=
``out``.

The statistics live next to the weights as ``ood_stats.safetensors`` (tensors plus a JSON
header; read with ``safetensors``, no pickle) and are loaded by
:meth:`ViewClassifier.from_pretrained` as ``model.ood``. Fit them for a trained classifier with
``echosonar train view-classifier --data CACHE --out DIR --ood-only`` (a full training run
fits them at its end).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echosonar.taxonomy import OTHER_VIEW

OOD_FILE = "ood_stats.safetensors"
#: fewer training + held-out clips than this and the statistics are too noisy to trust (a tiny
#: quickstart); the training command then leaves the guard unfitted
MIN_FIT_CLIPS = 200
OOD_FORMAT = "echosonar-view-ood"
LEVELS = ("in", "unusual", "out")


@dataclass
class OODStats:
    """Per layer: class means ``[K, D]`` of the cardiac views ``classes``, the shared precision
    ``[D, D]`` and the median clean held-out distance (``scale``); the two thresholds on the
    combined score."""

    classes: list[str]
    means: dict[str, torch.Tensor]
    precision: dict[str, torch.Tensor]
    scale: dict[str, float]
    warn_at: float
    reject_at: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.means)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save

        from echosonar.io.atomic import atomic_write_bytes

        path = Path(directory) / OOD_FILE
        header = {"format": OOD_FORMAT, "version": "2", "classes": json.dumps(self.classes),
                  "layers": json.dumps(self.layers), "scale": json.dumps(self.scale),
                  "warn_at": repr(float(self.warn_at)), "reject_at": repr(float(self.reject_at)),
                  "meta": json.dumps(self.meta)}
        tensors = {}
        for k in self.layers:
            tensors[f"means.{k}"] = self.means[k].float().contiguous()
            tensors[f"precision.{k}"] = self.precision[k].float().contiguous()
        atomic_write_bytes(path, save(tensors, metadata=header))  # no staging file of its own
        return path


class OODError(ValueError):
    """An ``ood_stats.safetensors`` file is malformed or does not fit the classifier."""


def load_ood(directory: str | Path, widths: Sequence[int] | None = None) -> OODStats | None:
    """The guard's statistics stored in a view-classifier folder, or None when there are none.
    ``widths`` (the classifier's ``config.widths``) checks that they fit its layers."""
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / OOD_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if header.get("format") != OOD_FORMAT or header.get("version") != "2":
                raise OODError(f"{path} is not an EchoSonar OOD statistics file (version 2)")
            layers = json.loads(header["layers"])
            means = {k: f.get_tensor(f"means.{k}").float() for k in layers}
            precision = {k: f.get_tensor(f"precision.{k}").float() for k in layers}
        classes = json.loads(header["classes"])
        scale = {k: float(v) for k, v in json.loads(header["scale"]).items()}
        stats = OODStats(classes, means, precision, scale, float(header["warn_at"]),
                         float(header["reject_at"]), json.loads(header.get("meta", "{}")))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as e:
        if isinstance(e, OODError):
            raise
        raise OODError(f"cannot read {path}: {e}") from e
    dims = layer_dims(widths) if widths is not None else {}
    for k in layers:
        m, p = means[k], precision[k]
        d = m.shape[1] if m.ndim == 2 else -1
        if (m.shape[0] != len(classes) or p.shape != (d, d) or scale.get(k, 0) <= 0
                or (dims and dims.get(k) != d)):
            raise OODError(f"{path} does not fit this view classifier (layer {k}: means "
                           f"{tuple(m.shape)}, precision {tuple(p.shape)})")
    if not layers or not (0 < stats.warn_at <= stats.reject_at < math.inf):
        raise OODError(f"{path}: no layers, or thresholds {stats.warn_at}, {stats.reject_at} "
                       "out of order")
    return stats


#: the layers whose features the guard uses: backbone stages by index (2 = patchify stem after
#: its ReLU, 3-5 = conv blocks) and ``pen``, the penultimate features
LAYERS: tuple[str, ...] = ("L2", "L3", "L4", "L5", "pen")


def layer_dims(widths: Sequence[int]) -> dict[str, int]:
    """Feature size per layer for a classifier with these ``widths``."""
    w = list(widths)
    return {"L2": 2 * w[0], **{f"L{3 + i}": 2 * c for i, c in enumerate(w[1:])},
            "pen": 2 * w[-1]}


def layer_features(model: Any, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-layer clip features and the logits for a batch ``x [B, F, 3, S, S]``: each backbone
    stage's channel-wise spatial mean and standard deviation per frame, averaged over frames;
    ``pen`` = :meth:`ViewClassifier.embed` (computed in the same pass)."""
    b, f = x.shape[:2]
    h = (x.flatten(0, 1) - 0.5) * 4.0
    out: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(model.backbone):
        h = layer(h)
        if i >= 2:
            a = h.flatten(2)
            out[f"L{i}"] = torch.cat([a.mean(-1), a.std(-1)], 1).view(b, f, -1).mean(1)
    z = h.mean(dim=(2, 3)).view(b, f, -1)
    out["pen"] = torch.cat([z.mean(1), z.std(1, unbiased=False) if f > 1 else z[:, 0] * 0], 1)
    return out, model.head(out["pen"])


# ---------------------------------------------------------------------------------------------
# Features and scores
# ---------------------------------------------------------------------------------------------

def _inputs(model: Any, arrs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    from echosonar.ingest.view_model import clip_input

    cfg = model.config
    x = torch.stack([clip_input(a, cfg.n_frames, cfg.image_size, normalize=cfg.normalize)
                     for a in arrs])
    return x, torch.tensor([a.shape[1] == 3 for a in arrs])


def _allowed(model: Any, is_color: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` classes the colour prior allows (all of them without the prior)."""
    if model.config.channel_prior:
        return model.allowed(is_color)
    return torch.ones(len(is_color), len(model.config.classes), dtype=torch.bool)


def _cardiac(model: Any, classes: Sequence[str]) -> list[int]:
    """Indices of ``classes`` in the classifier's logits."""
    return [list(model.config.classes).index(c) for c in classes]


def class_distances(stats: OODStats, feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, K]``: per cardiac view, the mean over layers of the Mahalanobis distance divided
    by the layer's scale."""
    total = None
    for k in stats.layers:
        d = feats[k][:, None, :] - stats.means[k][None]
        m2 = torch.einsum("bkd,de,bke->bk", d, stats.precision[k], d).clamp(min=0)
        term = m2.sqrt() / stats.scale[k]
        total = term if total is None else total + term
    assert total is not None
    return total / len(stats.layers)


@torch.no_grad()
def scores_from_inputs(model: Any, stats: OODStats | None, x: torch.Tensor,
                       is_color: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per clip of a batch ``x [B, F, 3, S, S]``: ``mahalanobis`` (the combined distance to the
    nearest allowed cardiac view; NaN without ``stats``), ``energy`` (``-logsumexp`` of the
    allowed cardiac logits; higher = less familiar) and ``nearest`` (index into
    ``stats.classes``)."""
    model.eval()
    feats, logits = layer_features(model, x)
    allowed = _allowed(model, is_color)
    card = torch.tensor([c != OTHER_VIEW for c in model.config.classes])
    energy = -torch.logsumexp(logits.masked_fill(~(allowed & card), -1e4), -1)
    out = {"energy": energy}
    if stats is None:
        out["mahalanobis"] = torch.full_like(energy, float("nan"))
        out["nearest"] = torch.full_like(energy, -1, dtype=torch.long)
        return out
    dist = class_distances(stats, feats)
    dist = dist.masked_fill(~allowed[:, _cardiac(model, stats.classes)], math.inf)
    out["mahalanobis"], out["nearest"] = dist.min(1)
    return out


def level(score: float, stats: OODStats) -> str:
    """``in``, ``unusual`` or ``out`` for a Mahalanobis distance."""
    if not math.isfinite(score) or score >= stats.reject_at:
        return "out"
    return "unusual" if score >= stats.warn_at else "in"


@torch.no_grad()
def assess_clips(model: Any, clips: Sequence[Any], batch_size: int = 64) -> list[dict[str, Any]]:
    """One dict per clip (``Clip`` or frames ``[T, C, H, W]``): ``score`` (the combined
    Mahalanobis distance; about 1 for a typical held-out simulated clip; None without
    statistics), ``energy``, ``warn_at``, ``reject_at``, ``level`` (``in`` /
    ``unusual`` / ``out``, or None without statistics) and a plain-words ``reason``."""
    stats = getattr(model, "ood", None)
    out: list[dict[str, Any]] = []
    for i in range(0, len(clips), batch_size):
        arrs = [getattr(c, "frames", c) for c in clips[i:i + batch_size]]
        x, col = _inputs(model, arrs)
        sc = scores_from_inputs(model, stats, x, col)
        for j in range(len(arrs)):
            energy = float(sc["energy"][j])
            if stats is None:
                out.append({"score": None, "energy": energy, "warn_at": None, "reject_at": None,
                            "level": None, "reason": "the view classifier has no OOD "
                            "statistics (fit them: echosonar train view-classifier --ood-only)"})
                continue
            s = float(sc["mahalanobis"][j])
            lv = level(s, stats)
            near = stats.classes[int(sc["nearest"][j])] if int(sc["nearest"][j]) >= 0 else "-"
            reason = {
                "in": None,
                "unusual": f"unlike the training clips (OOD distance {s:.2f} to the nearest "
                           f"view, {near}; warn at {stats.warn_at:.2f}, reject at "
                           f"{stats.reject_at:.2f})",
                "out": f"not recognisable as cardiac ultrasound (OOD distance {s:.2f} to the "
                       f"nearest view, {near}; reject at {stats.reject_at:.2f})",
            }[lv]
            out.append({"score": s if math.isfinite(s) else None, "energy": energy,
                        "warn_at": stats.warn_at, "reject_at": stats.reject_at, "level": lv,
                        "reason": reason})
    return out


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def collect_features(model: Any, data: Any, augment_passes: int = 0, seed: int = 0,
                     us_augment: float = 1.0, augment: float = 1.0, batch_size: int = 64
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-layer features ``{layer: [N, D]}``, labels ``[N]`` and is-colour ``[N]`` of ``data``
    (:class:`~echosonar.ingest.view_train.ViewData`): one clean pass (middle frames) plus
    ``augment_passes`` passes under the training augmentation."""
    from echosonar.ingest import view_train as vt

    model.eval()
    g = torch.Generator().manual_seed(seed)
    feats: dict[str, list[torch.Tensor]] = {}
    labels, cols = [], []
    for p in range(1 + augment_passes):
        for i in range(0, len(data), batch_size):
            idx = np.arange(i, min(i + batch_size, len(data)))
            x, col = _inputs(model, [data.frames[k] for k in idx])
            if p > 0:
                x = vt.augment(vt.us_augment(x, g, us_augment), g, augment)
            for k, v in layer_features(model, x)[0].items():
                feats.setdefault(k, []).append(v)
            labels.append(torch.as_tensor(data.labels[idx]))
            cols.append(col)
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels), torch.cat(cols)


def fit_gaussians(model: Any, feats: torch.Tensor, labels: torch.Tensor,
                  shrinkage: float = 0.05) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Class means and the shared precision (covariance shrunk toward its mean variance) of
    one layer's features ``[N, D]``."""
    names = list(model.config.classes)
    classes = [c for k, c in enumerate(names) if c != OTHER_VIEW and (labels == k).any()]
    if not classes:
        raise ValueError("no training clips of a cardiac view to fit the OOD guard on")
    f64 = feats.double()
    means = torch.stack([f64[labels == names.index(c)].mean(0) for c in classes])
    centred = torch.cat([f64[labels == names.index(c)] - means[i]
                         for i, c in enumerate(classes)])
    cov = centred.T @ centred / max(1, centred.shape[0] - len(classes))
    d = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * torch.eye(d, dtype=cov.dtype)
    return classes, means.float(), torch.linalg.inv(cov).float()


def conformal_threshold(scores: Sequence[float], alpha: float) -> float | None:
    """Split-conformal upper threshold: the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n``
    held-out scores, so that a new item exchangeable with them reaches it with probability at
    most ``alpha``; None when ``n`` is too small for that (``n < 1 / alpha - 1``)."""
    v = np.sort(np.asarray(scores, float))
    k = math.ceil((len(v) + 1) * (1 - alpha))
    return float(v[k - 1]) if 1 <= k <= len(v) else None


def study_maxima(scores: np.ndarray, study: np.ndarray | None) -> np.ndarray:
    """The farthest clip of each study (``study`` None: every clip is its own study)."""
    if study is None:
        return np.asarray(scores, float)
    return np.array([scores[study == k].max() for k in np.unique(study)])


def pool_view_data(a: Any, b: Any) -> Any:
    """Two :class:`~echosonar.ingest.view_train.ViewData` as one, study ids kept apart."""
    def ids(d: Any) -> np.ndarray:
        return np.arange(len(d)) if d.study is None else np.asarray(d.study)

    ia = ids(a)
    off = int(ia.max()) + 1 if len(ia) else 0
    return type(a)(list(a.frames) + list(b.frames), np.concatenate([a.labels, b.labels]),
                   list(a.splits) + list(b.splits), np.concatenate([ia, ids(b) + off]))


def fit_ood(model: Any, train: Any, val: Any, augment_passes: int = 2, seed: int = 0,
            warn_alpha: float = 0.02, reject_quantile: float = 0.995,
            reject_margin: float = 1.1, layers: Sequence[str] = LAYERS,
            calibration: Any = None) -> OODStats:
    """Fit the guard for ``model`` on ``train`` and calibrate it on held-out clips: ``val``
    plus ``calibration`` (both :class:`~echosonar.ingest.view_train.ViewData`, e.g. a fresh
    simulated set; with an empty ``val`` and no ``calibration`` a seeded fifth of ``train`` is
    held out).

    ``warn_at`` is the split-conformal ``1 - warn_alpha`` threshold of the held-out *studies'*
    farthest clips (:func:`conformal_threshold`): at most ``warn_alpha`` of simulated studies
    like them get a warning (their findings withheld). With too few held-out studies for that
    (fewer than ``1 / warn_alpha - 1``), the farthest held-out clip times 1.2. ``reject_at``:
    the ``reject_quantile`` of held-out clips under the training augmentation times
    ``reject_margin``."""
    if calibration is not None and len(calibration):
        val = pool_view_data(val, calibration) if len(val) else calibration
    if len(val) == 0:
        rng = np.random.default_rng(seed)
        hold = rng.random(len(train)) < 0.2
        val = type(train)([f for f, h in zip(train.frames, hold, strict=True) if h],
                          train.labels[hold], ["val"] * int(hold.sum()))
        keep = ~hold
        train = type(train)([f for f, k in zip(train.frames, keep, strict=True) if k],
                            train.labels[keep], ["train"] * int(keep.sum()))
    feats, labels, _ = collect_features(model, train, augment_passes, seed)
    means, precision = {}, {}
    classes: list[str] = []
    for k in layers:
        classes, means[k], precision[k] = fit_gaussians(model, feats[k], labels)
    stats = OODStats(classes, means, precision, {k: 1.0 for k in layers}, 1.0, 2.0)
    vf, _, vcol = collect_features(model, val, 0, seed + 1)
    for k in layers:  # per-layer scale: median clean held-out distance to the nearest view
        one = OODStats(classes, {k: means[k]}, {k: precision[k]}, {k: 1.0}, 1.0, 2.0)
        stats.scale[k] = float(np.median(_dist(model, one, vf, vcol)))
    clean = _dist(model, stats, vf, vcol)
    af, _, acol = collect_features(model, val, 1, seed + 2)
    aug = _dist(model, stats, {k: v[len(clean):] for k, v in af.items()}, acol[len(clean):])
    maxima = study_maxima(clean, getattr(val, "study", None))
    warn = conformal_threshold(maxima, warn_alpha)
    rule = f"conformal: study maxima, alpha {warn_alpha}"
    if warn is None:
        warn, rule = float(clean.max()) * 1.2, "farthest held-out clip x 1.2 (too few studies)"
    reject = max(float(np.quantile(aug, reject_quantile)) * reject_margin, warn * 1.01)
    stats.warn_at, stats.reject_at = warn, reject
    stats.meta = {"train_clips": len(train), "val_clips": len(val),
                  "held_out_studies": len(maxima), "augment_passes": augment_passes,
                  "warn_rule": rule, "warn_alpha": warn_alpha,
                  "reject_quantile": reject_quantile, "reject_margin": reject_margin,
                  "val_clean": _quantiles(clean), "val_study_max": _quantiles(maxima),
                  "val_augmented": _quantiles(aug)}
    return stats


@torch.no_grad()
def _dist(model: Any, stats: OODStats, feats: dict[str, torch.Tensor],
          cols: torch.Tensor) -> np.ndarray:
    dist = class_distances(stats, feats)
    allowed = _allowed(model, cols)[:, _cardiac(model, stats.classes)]
    return dist.masked_fill(~allowed, math.inf).min(1).values.numpy()


def _quantiles(v: np.ndarray) -> dict[str, float]:
    return {f"q{q}": round(float(np.quantile(v, q / 100)), 3) for q in (50, 90, 99, 100)}


def auroc(inside: Sequence[float], outside: Sequence[float]) -> float:
    """P(score of an outside item > score of an inside item), ties counted half."""
    a, b = np.asarray(inside, float), np.asarray(outside, float)
    if not len(a) or not len(b):
        return float("nan")
    gt = (b[:, None] > a[None, :]).mean()
    eq = (b[:, None] == a[None, :]).mean()
    return float(gt + 0.5 * eq)
