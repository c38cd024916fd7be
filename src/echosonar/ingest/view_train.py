"""Train and evaluate the view classifier on simulated clips.

``OTHER`` has no natural simulated examples, so it is synthesised from real training clips every
batch (``other_fraction`` of it): heavy zoom into a random corner (off-axis / partial views),
patch shuffling (structure destroyed, texture kept), speckle-only noise in the sector, rotation
by 90-270 degrees or upside-down, a near-black frame, and a blend of two clips of different
views. Left-right mirroring is *not* used (neither as OTHER nor as augmentation): some labs
display apical views mirrored, and that is still the same view.

Augmentation (``augment`` scales it): rotation, depth zoom, sector-width stretch, shift, gain,
gamma, blur, coarser speckle and noise, and a random temporal offset of the sampled frames.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echosonar.config.ingest import ViewModelConfig, ViewTrainConfig
from echosonar.ingest.view_model import ViewClassifier, clip_input
from echosonar.schema import Study
from echosonar.taxonomy import OTHER_VIEW
from echosonar.us_augment import CLEAN_SHARE, sector_mask, us_augment  # noqa: F401 - shared home

OTHER_KINDS = ("zoom", "shuffle", "noise", "rotate", "blank", "blend")


@dataclass
class ViewData:
    """Clips (as stored: uint8 or float ``[T, C, H, W]``), class indices and splits."""

    frames: list[np.ndarray]
    labels: np.ndarray
    splits: list[str]
    #: study index of each clip (None: every clip its own study); the OOD guard's warning
    #: threshold is calibrated per study
    study: np.ndarray | None = None

    def subset(self, split: str) -> ViewData:
        keep = [i for i, s in enumerate(self.splits) if s == split]
        return ViewData([self.frames[i] for i in keep], self.labels[keep], [split] * len(keep),
                        None if self.study is None else self.study[keep])

    def __len__(self) -> int:
        return len(self.frames)


def load_studies(data: str | Path, cfg: Any, workers: int = 1,
                 progress: bool = False) -> list[Study]:
    """A clip cache (``index.json``) or a simulated set (``manifest.json``) -> studies."""
    from echosonar.ingest.cache import INDEX, iter_cache
    from echosonar.ingest.study import ingest_manifest

    data = Path(data)
    if (data / INDEX).is_file():
        return list(iter_cache(data, as_float=False))
    if (data / "manifest.json").is_file() or data.suffix == ".json":
        return ingest_manifest(data, cfg, workers=workers, progress=progress)
    raise FileNotFoundError(f"{data} is neither a clip cache (index.json) nor a simulated set "
                            "(manifest.json)")


def view_data(studies: list[Study], classes: list[str], seed: int = 0) -> ViewData:
    """Clips with a known, trainable view. Studies without a split get a seeded 80/20 split."""
    rng = np.random.default_rng(seed)
    frames, labels, splits, study = [], [], [], []
    for i, s in enumerate(studies):
        split = s.split or ("train" if rng.random() < 0.8 else "val")
        for c in s.clips:
            if c.view in classes and c.view_conf > 0:
                f = c.frames  # keep uint8 in memory (4x smaller than float32)
                frames.append(f if f.dtype == np.uint8 else
                              np.rint(np.clip(f, 0, 1) * 255).astype(np.uint8))
                labels.append(classes.index(c.view))
                splits.append(split)
                study.append(i)
    return ViewData(frames, np.asarray(labels, np.int64), splits, np.asarray(study, np.int64))


# ---------------------------------------------------------------------------------------------
# Synthetic OTHER clips and augmentation, on batches x [B, F, 3, S, S] in [0, 1]
# ---------------------------------------------------------------------------------------------

def make_other(x: torch.Tensor, g: torch.Generator, kind: str | None = None,
               partner: torch.Tensor | None = None) -> torch.Tensor:
    """Corrupt one clip ``[F, 3, S, S]`` into an OTHER example of ``kind`` (random if None)."""
    f, c, s, _ = x.shape
    r = lambda: float(torch.rand((), generator=g))  # noqa: E731
    kind = kind or OTHER_KINDS[int(torch.randint(len(OTHER_KINDS), (), generator=g))]
    if kind == "zoom":
        side = int(s * (0.25 + 0.2 * r()))
        x0, y0 = int((s - side) * r()), int((s - side) * r())
        return F.interpolate(x[..., y0:y0 + side, x0:x0 + side], size=(s, s), mode="bilinear",
                             align_corners=False)
    if kind == "shuffle":
        k = 4 if r() < 0.5 else 8
        p = s // k
        tiles = x[..., :p * k, :p * k].unfold(2, p, p).unfold(3, p, p)  # F,C,k,k,p,p
        tiles = tiles.reshape(f, c, k * k, p, p)[:, :, torch.randperm(k * k, generator=g)]
        out = tiles.reshape(f, c, k, k, p, p).permute(0, 1, 2, 4, 3, 5).reshape(f, c, k * p, k * p)
        return F.interpolate(out, size=(s, s), mode="nearest") if k * p != s else out
    if kind == "noise":
        mask = (x.amax(dim=(0, 1)) > 0.02).float()
        n = torch.rand(f, 1, s // 2, s // 2, generator=g) ** 2
        n = F.interpolate(n, size=(s, s), mode="bilinear", align_corners=False)
        return (n * (0.3 + 0.7 * r()) * mask).expand(-1, c, -1, -1).contiguous()
    if kind == "rotate":
        return torch.rot90(x, 1 + int(3 * r()), dims=(2, 3)) if r() < 0.6 else x.flip(2)
    if kind == "blank":
        return torch.rand(x.shape, generator=g) * 0.04
    # blend of two different views
    other = partner if partner is not None else x.flip(3)
    return 0.5 * x + 0.5 * other


def augment(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Photometric and small geometric jitter of a batch ``[B, F, 3, S, S]``: rotation,
    scale, shift, gain, gamma, blur, coarser speckle (down/up-sampling) and noise."""
    if strength <= 0:
        return x
    b, f, c, s, _ = x.shape
    u = torch.rand(b, 9, generator=g)
    ang = (u[:, 0] - 0.5) * math.radians(16) * strength
    # depth (zoom 0.85-1.17x) and sector width (aspect 0.9-1.1x) vary across scanners
    sy = torch.exp((u[:, 1] - 0.5) * 0.32 * strength)
    sx = sy * torch.exp((u[:, 8] - 0.5) * 0.2 * strength)
    tx, ty = (u[:, 2] - 0.5) * 0.1 * strength, (u[:, 3] - 0.5) * 0.06 * strength
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos / sx, -sin / sy, tx], 1),
                         torch.stack([sin / sx, cos / sy, ty], 1)], 1)
    grid = F.affine_grid(theta, (b, f * c, s, s), align_corners=False)
    x = F.grid_sample(x.reshape(b, f * c, s, s), grid, align_corners=False).view(b, f, c, s, s)
    gain = torch.exp((u[:, 4] - 0.5) * 0.8 * strength).view(b, 1, 1, 1, 1)
    gamma = torch.exp((u[:, 5] - 0.5) * 0.7 * strength).view(b, 1, 1, 1, 1)
    x = (x.clamp(0, 1) ** gamma) * gain
    blur = u[:, 6] < 0.3 * strength
    if blur.any():
        xb = x[blur].flatten(0, 2).unsqueeze(1)
        xb = F.avg_pool2d(xb, 3, 1, 1, count_include_pad=False)
        x[blur] = xb.view(-1, f, c, s, s)
    coarse = torch.rand(b, generator=g) < 0.3 * strength  # coarser speckle (lower-MHz probe)
    if coarse.any():
        xc = x[coarse].flatten(0, 1)
        lo = int(s / (1.3 + 0.7 * float(torch.rand((), generator=g))))
        xc = F.interpolate(F.interpolate(xc, size=(lo, lo), mode="area"), size=(s, s),
                           mode="bilinear", align_corners=False)
        x[coarse] = xc.view(-1, f, c, s, s)
    noise = torch.randn(x.shape, generator=g) * (0.03 * strength * u[:, 7]).view(b, 1, 1, 1, 1)
    return (x + noise * (x > 0.01)).clamp(0, 1)


def make_batch(data: ViewData, idx: np.ndarray, mcfg: ViewModelConfig, tcfg: ViewTrainConfig,
               g: torch.Generator, other_index: int, train: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``[B, F, 3, S, S]``, targets ``[B]`` and is-colour ``[B]`` (stored channels = 3);
    a share of items become OTHER."""
    xs, ys = [], []
    col = torch.tensor([data.frames[i].shape[1] == 3 for i in idx])
    for i in idx:
        off = float(torch.rand((), generator=g)) if train else 0.5
        xs.append(clip_input(data.frames[i], mcfg.n_frames, mcfg.image_size, off,
                             normalize=mcfg.normalize))
        ys.append(int(data.labels[i]))
    x, y = torch.stack(xs), torch.tensor(ys)
    n_other = int(round(tcfg.other_fraction * len(idx)))
    if n_other and other_index >= 0:
        for j in torch.randperm(len(idx), generator=g)[:n_other].tolist():
            partner = next((x[k] for k in torch.randperm(len(idx), generator=g).tolist()
                            if y[k] != y[j] and y[k] != other_index), None)
            x[j] = make_other(x[j].clone(), g,
                              partner=None if partner is None else partner.clone())
            y[j] = other_index
    if train:
        x = augment(us_augment(x, g, getattr(tcfg, "us_augment", 0.0)), g, tcfg.augment)
    return x, y, col


@torch.no_grad()
def evaluate(model: ViewClassifier, data: ViewData, tcfg: ViewTrainConfig,
             with_other: bool = True, seed: int = 1234) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix (rows = truth) on ``data``.

    With ``with_other``, a deterministic ``other_fraction`` of items is replaced by synthetic
    OTHER clips (the same ones on every call), so OTHER recall is measured too.
    """
    model.eval()
    classes = list(model.config.classes)
    other = classes.index(OTHER_VIEW) if OTHER_VIEW in classes else -1
    g = torch.Generator().manual_seed(seed)
    conf = np.zeros((len(classes), len(classes)), np.int64)
    order = np.arange(len(data))
    ecfg = dataclasses.replace(tcfg, other_fraction=tcfg.other_fraction if with_other else 0.0)
    for i in range(0, len(order), 64):
        x, y, col = make_batch(data, order[i:i + 64], model.config, ecfg, g, other, train=False)
        pred = model(x, col).argmax(-1)
        for t, p in zip(y.tolist(), pred.tolist(), strict=True):
            conf[t, p] += 1
    n = conf.sum()
    per = {classes[k]: (float(conf[k, k] / conf[k].sum()) if conf[k].sum() else None)
           for k in range(len(classes))}
    return {"n": int(n), "accuracy": float(np.trace(conf) / max(n, 1)), "per_class": per,
            "confusion": conf.tolist(), "classes": classes}


def train_view_classifier(data: ViewData, mcfg: ViewModelConfig, tcfg: ViewTrainConfig,
                          progress: bool = False) -> tuple[ViewClassifier, list[float]]:
    """Train from scratch on ``data`` (its train split is used as given). Returns model, losses."""
    from echosonar.utils.progress import progress as bar
    from echosonar.utils.repro import seed_everything

    seed_everything(tcfg.seed)
    torch.set_num_threads(max(1, tcfg.threads))
    if len(data) == 0:
        raise ValueError("no training clips with a known view")
    model = ViewClassifier(mcfg)
    other = list(mcfg.classes).index(OTHER_VIEW) if OTHER_VIEW in mcfg.classes else -1
    g = torch.Generator().manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    steps_per_epoch = max(1, math.ceil(len(data) / tcfg.batch_size))
    total = steps_per_epoch * tcfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(k, total)
                                                                       / total)))
    losses: list[float] = []
    it = bar(range(total), desc="train view-classifier", total=total, force=progress)
    order = np.array([], int)
    model.train()
    for step in it:
        if step % steps_per_epoch == 0:
            order = rng.permutation(len(data))
        k = step % steps_per_epoch
        idx = order[k * tcfg.batch_size:(k + 1) * tcfg.batch_size]
        x, y, col = make_batch(data, idx, mcfg, tcfg, g, other, train=True)
        # no label smoothing: it would put mass on classes the colour prior masks out
        loss = F.cross_entropy(model(x, col), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if hasattr(it, "set_postfix") and step % 10 == 0:
            it.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    return model, losses
