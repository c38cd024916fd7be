"""The classifier baselines the paper beats, trained and evaluated on one split protocol.

1. ``prior`` — training-set prevalence as the score of every study (majority vote at 0.5;
   thresholds from validation cannot beat chance, so its BAcc is 50% by construction).
2. ``single_view`` — :class:`ClipClassifier` on the study's A4C clip (``cfg.single_view``);
   studies without that view get the prior.
3. ``late_fusion`` — PanEcho-style: one view-agnostic :class:`ClipClassifier` trained on every
   clip with its study's labels; a study's probabilities are the mean over its clips.
4. ``attention_fusion`` — :class:`FusionClassifier`: view embeddings, cross-view attention,
   per-label attention over clips weighting per-clip logits, missing views masked.

Protocol: train on ``train``; pick each model's best epoch by validation BCE; choose one threshold
per label on ``val`` maximising balanced accuracy; report on ``test`` (never used for choices).

Outputs in ``OUT/``: ``<method>/predictions_{val,test}.json`` (format below), ``<method>/model/``
(checkpoint, learned methods), ``metrics.json`` (every method, every label) and ``results.md``.

Predictions file (shared with the evaluation stage)::

    {"format": "echosonar.predictions/v1", "method": str, "split": str,
     "label_keys": [...], "thresholds": {label: float},
     "studies": {key: {"labels": {label: 0/1}, "scores": {label: prob}}}}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echosonar.config.encode import BaselineConfig
from echosonar.encode.baseline_models import (
    VIEW_ID,
    BaselineModelConfig,
    ClipClassifier,
    EvidenceFusionClassifier,
    FusionClassifier,
    StudySet,
    slot_names,
)
from echosonar.encode.metrics import choose_thresholds, evaluate_scores
from echosonar.io.atomic import atomic_write_json, atomic_write_text
from echosonar.taxonomy import LABEL_KEYS

METHODS = ("prior", "single_view", "late_fusion", "attention_fusion", "attention_fusion_evidence")
FUSION_METHODS = ("attention_fusion", "attention_fusion_evidence")
PRED_FORMAT = "echosonar.predictions/v1"


def prevalence(labels: torch.Tensor) -> torch.Tensor:
    """Smoothed positive rate per label, ``[L]``."""
    return (labels.sum(0) + 0.5) / (labels.shape[0] + 1.0)


def _param_groups(model: torch.nn.Module, cfg: BaselineConfig) -> list[dict[str, Any]]:
    """AdamW groups: everything at ``cfg.lr``, the evidence model's linear measurement term at
    ``cfg.measure_lr`` (a cut-off on z-scores needs large weights, which at the fusion lr it
    reaches only after the clip path has overfit noise and the best val epoch has passed)."""
    meas = getattr(model, "meas", None)
    if meas is None:
        return [{"params": list(model.parameters())}]
    own = {id(p) for p in meas.parameters()}
    return [{"params": [p for p in model.parameters() if id(p) not in own]},
            {"params": list(meas.parameters()), "lr": cfg.measure_lr}]


def _fit(model: torch.nn.Module, n_items: int,
         batch_loss: Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
         val_loss: Callable[[torch.nn.Module], float], cfg: BaselineConfig,
         log: Callable[[str], None]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """AdamW for ``cfg.epochs``; returns the model at its best validation-loss epoch."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    best, best_state, best_epoch = math.inf, copy.deepcopy(model.state_dict()), -1
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n_items, generator=gen)
        for s in range(0, n_items, cfg.batch_size):
            loss = batch_loss(model, perm[s:s + cfg.batch_size], gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            vl = val_loss(model)
        if vl < best:
            best, best_state, best_epoch = vl, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    model.eval()
    log(f"  best epoch {best_epoch} (val BCE {best:.4f})")
    return model, {"best_epoch": best_epoch, "val_bce": best}


def _bce(p: np.ndarray, y: torch.Tensor) -> float:
    return float(F.binary_cross_entropy(torch.from_numpy(p).clamp(1e-6, 1 - 1e-6), y))


def _view_clip(ss: StudySet, view: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of each study's first clip of ``view`` ``[S]`` and whether it has one ``[S]``."""
    hit = (ss.views == VIEW_ID[view]) & ss.present
    return hit.float().argmax(1), hit.any(1)


def _clip_config(ss: StudySet, cfg: BaselineConfig, kind: str) -> BaselineModelConfig:
    c = BaselineModelConfig(kind=kind, dim=ss.tokens.shape[-1], hidden=cfg.hidden,
                            heads=cfg.heads, dropout=cfg.dropout, mix_layers=cfg.fusion_layers)
    if kind == "fusion_evidence":
        if cfg.evidence_structures:
            c.structures, c.struct_dim = ss.structure_tokens.shape[2:]
        if cfg.evidence_measurements:
            c.slots = slot_names()
    return c


def _fusion_logits(model: torch.nn.Module, ss: StudySet, rows: torch.Tensor | slice,
                   present: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, L]`` of a fusion model on studies ``rows`` of ``ss`` with clip mask
    ``present [B, C]`` (token dropout hides clips through it)."""
    if isinstance(model, EvidenceFusionClassifier):
        if model.config.slots and model.config.slots != slot_names():
            raise ValueError("the evidence baseline was trained on other measurement slots "
                             "than detect.measure.measurement_slots() gives now")
        return model(ss.tokens[rows], ss.views[rows], present, ss.structure_tokens[rows],
                     ss.structure_scores[rows], ss.measurements[rows])
    return model(ss.tokens[rows], ss.views[rows], present)


def predict(method: str, model: Any, ss: StudySet, prior: torch.Tensor,
            cfg: BaselineConfig) -> np.ndarray:
    """Probabilities ``[S, L]`` of ``method`` (``model`` from :func:`train_method`)."""
    s = len(ss)
    with torch.no_grad():
        if method == "prior":
            return prior[None].expand(s, -1).numpy().copy()
        if method == "single_view":
            idx, has = _view_clip(ss, cfg.single_view)
            tok = ss.tokens[torch.arange(s), idx]
            p = torch.sigmoid(model(tok))
            return torch.where(has[:, None], p, prior[None]).numpy()
        if method == "late_fusion":
            c = ss.tokens.shape[1]
            p = torch.sigmoid(model(ss.tokens.flatten(0, 1))).view(s, c, -1)
            w = ss.present.float()[:, :, None]
            return ((p * w).sum(1) / w.sum(1).clamp(min=1)).numpy()
        if method in FUSION_METHODS:
            return torch.sigmoid(_fusion_logits(model, ss, slice(None), ss.present)).numpy()
    raise ValueError(f"unknown baseline {method!r}; choose from {METHODS}")


def train_method(method: str, train: StudySet, val: StudySet, cfg: BaselineConfig,
                 log: Callable[[str], None] = print) -> tuple[Any, dict[str, Any]]:
    """Train one baseline; returns ``(model or None, info)``."""
    torch.manual_seed(cfg.seed)
    prior = prevalence(train.labels)
    if method == "prior":
        return None, {}
    yv = val.labels
    if method == "single_view":
        idx, has = _view_clip(train, cfg.single_view)
        if not bool(has.any()):
            raise ValueError(f"no training study has a {cfg.single_view} clip")
        rows = torch.nonzero(has).squeeze(1)
        x, y = train.tokens[rows, idx[rows]], train.labels[rows]
        model = ClipClassifier(_clip_config(train, cfg, "clip"), prior)
    elif method == "late_fusion":
        s_idx, c_idx = torch.nonzero(train.present, as_tuple=True)
        x, y = train.tokens[s_idx, c_idx], train.labels[s_idx]
        model = ClipClassifier(_clip_config(train, cfg, "clip"), prior)
    elif method in FUSION_METHODS:
        if method == "attention_fusion":
            model = FusionClassifier(_clip_config(train, cfg, "fusion"), prior)
        else:
            model = EvidenceFusionClassifier(_clip_config(train, cfg, "fusion_evidence"), prior)
            model.fit_stats(train.measurements)   # training split only; saved as buffers

        def fusion_loss(m: torch.nn.Module, b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            present = train.present[b].clone()
            if cfg.token_dropout > 0:   # hide whole views, never all of a study's clips
                drop = torch.rand(present.shape, generator=gen) < cfg.token_dropout
                keep = present & ~drop
                present = torch.where(keep.any(1, keepdim=True), keep, present)
            logits = _fusion_logits(m, train, b, present)
            return F.binary_cross_entropy_with_logits(logits, train.labels[b])

        return _fit(model, len(train), fusion_loss,
                    lambda m: _bce(predict(method, m, val, prior, cfg), yv), cfg, log)
    else:
        raise ValueError(f"unknown baseline {method!r}; choose from {METHODS}")

    def clip_loss(m: torch.nn.Module, b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(m(x[b]), y[b])

    return _fit(model, len(x), clip_loss,
                lambda m: _bce(predict(method, m, val, prior, cfg), yv), cfg, log)


def predictions_json(method: str, split: str, ss: StudySet, probs: np.ndarray,
                     thresholds: dict[str, float]) -> dict[str, Any]:
    """The shared predictions format (see module docstring)."""
    studies = {}
    for i, key in enumerate(ss.keys):
        studies[key] = {
            "labels": {k: int(probs[i, j] >= thresholds[k]) for j, k in enumerate(LABEL_KEYS)},
            "scores": {k: round(float(probs[i, j]), 6) for j, k in enumerate(LABEL_KEYS)},
        }
    return {"format": PRED_FORMAT, "method": method, "split": split,
            "label_keys": list(LABEL_KEYS), "thresholds": thresholds, "studies": studies}


def run_baselines(ss: StudySet, out: str | Path, cfg: BaselineConfig,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every ``cfg.methods`` baseline on ``ss`` (all splits) and write ``out``."""
    out = Path(out)
    torch.set_num_threads(max(1, cfg.threads))
    train, val, test = ss.subset("train"), ss.subset("val"), ss.subset("test")
    for name, part in (("train", train), ("val", val), ("test", test)):
        if len(part) == 0:
            raise ValueError(f"the feature cache has no {name!r} studies; baselines need "
                             "train, val and test splits")
    prior = prevalence(train.labels)
    results: dict[str, Any] = {"n_studies": {"train": len(train), "val": len(val),
                                             "test": len(test)},
                               "label_keys": list(LABEL_KEYS), "methods": {}}
    for method in cfg.methods:
        log(f"baseline {method}")
        model, info = train_method(method, train, val, cfg, log)
        pv, pt = (predict(method, model, part, prior, cfg) for part in (val, test))
        thr = (choose_thresholds(val.labels.numpy(), pv, LABEL_KEYS) if method != "prior"
               else {k: 0.5 for k in LABEL_KEYS})
        for split, part, p in (("val", val, pv), ("test", test, pt)):
            atomic_write_json(out / method / f"predictions_{split}.json",
                              predictions_json(method, split, part, p, thr), indent=None)
        if model is not None:
            model.save_pretrained(out / method / "model", meta=info)
        m = evaluate_scores(test.labels.numpy(), pt, thr, LABEL_KEYS)
        m["val"] = {k: v for k, v in evaluate_scores(val.labels.numpy(), pv, thr,
                                                      LABEL_KEYS).items() if k != "per_label"}
        m.update(info)
        results["methods"][method] = m
        log(f"  test macro BAcc {100 * m['macro_bacc']:.1f}  macro F1 {100 * m['macro_f1']:.1f}"
            f"  macro AUROC {100 * m['macro_auroc']:.1f}")
    atomic_write_json(out / "metrics.json", results)
    atomic_write_text(out / "results.md", results_table(results))
    return results


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def results_table(results: dict[str, Any]) -> str:
    """Markdown: macro table, then per-label test BAcc for every method and label."""
    methods = results["methods"]
    n = results["n_studies"]
    lines = [f"Studies: train {n['train']}, val {n['val']}, test {n['test']}. Thresholds per "
             "label chosen on val (max balanced accuracy); numbers on test, in %.", "",
             "| baseline | macro BAcc | macro F1 | macro AUROC | labels in BAcc mean |",
             "|---|---|---|---|---|"]
    for name, m in methods.items():
        lines.append(f"| {name} | {_pct(m['macro_bacc'])} | {_pct(m['macro_f1'])} | "
                     f"{_pct(m['macro_auroc'])} | {m['n_labels_bacc']} |")
    lines += ["", "Per-label test balanced accuracy (n_pos / n_test):", "",
              "| label | n_pos | " + " | ".join(methods) + " |",
              "|---|---|" + "---|" * len(methods)]
    for k in results["label_keys"]:
        first = next(iter(methods.values()))["per_label"][k]
        row = [_pct(m["per_label"][k]["bacc"]) for m in methods.values()]
        lines.append(f"| {k} | {first['n_pos']}/{first['n_pos'] + first['n_neg']} | "
                     + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
