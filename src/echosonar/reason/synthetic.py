"""Synthetic ``StudyFeatures`` for tests and benchmarks (no simulator, encoder or detector needed).

Measurements are drawn at random, labels follow ``taxonomy.labels_from_measurements``, the
reasoning and report are rendered with ``textformat``, and the feature tensors carry a weak,
linear trace of the labels visible in each view (plus noise), so a model can learn something.
Feature widths are arguments: nothing downstream may assume them.
"""

from __future__ import annotations

import numpy as np

from echosonar.io.features import write_index, write_study_features
from echosonar.schema import StudyFeatures, ViewFeatures
from echosonar.taxonomy import (
    CONDITIONAL_STRUCTURES,
    FINDINGS,
    LABEL_KEYS,
    REPORT_SECTIONS,
    STRUCTURE_INDEX,
    STRUCTURES,
    VIEW_STRUCTURES,
    VIEWS,
    assessable,
    labels_from_measurements,
)
from echosonar.textformat import render_view_line


def _measurements(rng: np.random.Generator) -> dict:
    u = rng.uniform
    return {
        "sex": "M" if rng.random() < 0.5 else "F", "heart_rate_bpm": float(u(55, 100)),
        "ef_pct": float(u(22, 70)), "lvedd_cm": float(u(4.0, 6.6)), "lvesd_cm": float(u(2.5, 5)),
        "ivs_cm": float(u(0.7, 1.5)), "lvpw_cm": float(u(0.7, 1.4)), "la_ap_cm": float(u(3, 5.4)),
        "ra_minor_cm": float(u(3.4, 5.6)), "rv_basal_cm": float(u(3, 5.2)),
        "av_cusps": 2 if rng.random() < 0.12 else 3, "av_opening_cm": float(u(0.7, 2.3)),
        "mv_calc_score": float(u(0, 1)), "mr_jet_ratio": float(u(0, 0.5)),
        "tr_jet_ratio": float(u(0, 0.5)), "ar_jet_ratio": float(u(0, 0.5)),
        "pe_depth_cm": float(u(0.5, 2.5)) if rng.random() < 0.1 else 0.0,
    }


def _box(rng: np.random.Generator) -> list[float]:
    x0, y0 = rng.uniform(0.05, 0.6, size=2)
    return [float(x0), float(y0), float(x0 + rng.uniform(0.1, 0.35)),
            float(y0 + rng.uniform(0.1, 0.35))]


def _report(labels: dict[str, int], m: dict) -> dict[str, str]:
    rep = {s: "Normal." for s in REPORT_SECTIONS}
    pos = [f for f in FINDINGS if labels[f.key]]
    for sec in REPORT_SECTIONS:
        here = [f"{f.severity(m)} {f.name}" for f in pos if f.section == sec]
        if here:
            rep[sec] = "; ".join(here).capitalize() + "."
    rep["conclusion"] = ("Abnormal study: " + ", ".join(f.name for f in pos) + "."
                         if pos else "Normal study.")
    return rep


def synthetic_study(key: str, rng: np.random.Generator, proj: np.ndarray, d_det: int,
                    n_tokens: int, views: list[str], split: str = "train") -> StudyFeatures:
    """One study with the given views. ``proj`` is ``[len(LABEL_KEYS), D_enc]`` (label trace)."""
    m = _measurements(rng)
    labels = labels_from_measurements(m)
    lab = np.array([labels[k] for k in LABEL_KEYS], np.float32)
    vfs, lines = [], []
    for view in VIEWS:
        visible = np.array([view in f.views for f in FINDINGS] + [0], np.float32)
        if view not in views:
            na = [f.name for f in FINDINGS if view in f.views and not assessable(f.key, views)]
            lines.append(render_view_line(view, None, not_assessable=na))
            continue
        present = list(VIEW_STRUCTURES[view])
        present += [s for s, (fk, vs) in CONDITIONAL_STRUCTURES.items()
                    if labels[fk] and view in vs]
        boxes = {s: _box(rng) for s in STRUCTURES if s in present}
        clip = rng.normal(0, 1, (1 + n_tokens, proj.shape[1])).astype(np.float32)
        clip[0] += 2.0 * (lab * visible) @ proj
        st = np.zeros((len(STRUCTURES), d_det), np.float32)
        scores = np.full(len(STRUCTURES), 0.02, np.float32)
        for s in boxes:
            st[STRUCTURE_INDEX[s]] = rng.normal(0, 1, d_det)
            scores[STRUCTURE_INDEX[s]] = 0.95
        found = [f for f in FINDINGS if labels[f.key] and view in f.views]
        cited = {s: boxes[s] for s in boxes if any(s in f.structures for f in found)} or \
            {s: boxes[s] for s in list(boxes)[:2]}
        evidence = ", ".join(f"{f.name} {f.severity(m)}" for f in found) or "no abnormality seen"
        lines.append(render_view_line(view, cited, evidence, [f.name for f in found],
                                      "abnormal" if found else "normal"))
        vfs.append(ViewFeatures(view=view, clip_tokens=clip, structure_tokens=st,
                                structure_scores=scores, boxes=boxes,
                                measurements={"lvedd_cm": round(m["lvedd_cm"], 2)}
                                if view in ("PLAX", "A4C") else {}))
    return StudyFeatures(key=key, views=vfs, labels=labels, measurements=m,
                         reasoning="\n".join(lines), report=_report(labels, m), split=split)


def synthetic_studies(n: int, seed: int = 0, d_enc: int = 32, d_det: int = 16,
                      n_tokens: int = 4, min_views: int = 1, max_views: int = len(VIEWS),
                      split: str = "train") -> list[StudyFeatures]:
    """``n`` studies, each with a random subset of ``min_views..max_views`` views."""
    rng = np.random.default_rng(seed)
    proj = np.random.default_rng(1234).normal(0, 1, (len(LABEL_KEYS), d_enc)).astype(np.float32)
    out = []
    for i in range(n):
        k = int(rng.integers(min_views, max_views + 1))
        views = sorted(rng.choice(len(VIEWS), size=k, replace=False).tolist())
        out.append(synthetic_study(f"{split}{seed}_{i:04d}", rng, proj, d_det, n_tokens,
                                   [VIEWS[j] for j in views], split))
    return out


def write_synthetic_cache(root, splits: dict[str, int], seed: int = 0,
                          protocol: str = "end-to-end", **kw) -> list:
    """Write a feature cache (``io.features`` layout) with ``{split: n_studies}``; ``protocol``
    is what the index records (see ``evaluate.run.check_protocol``)."""
    entries, studies = [], []
    for j, (split, n) in enumerate(splits.items()):
        for sf in synthetic_studies(n, seed=seed + 101 * j, split=split, **kw):
            entries.append(write_study_features(root, sf))
            studies.append(sf)
    write_index(root, entries, encoder={"name": "synthetic"}, detector={"name": "synthetic"},
                protocol=protocol)
    return studies


def tiny_setup(n: int = 8, seed: int = 0, hidden: int = 32, layers: int = 1, vocab: int = 600,
               **lm_overrides) -> tuple[list[StudyFeatures], object, object]:
    """``(studies, tokenizer, model)``: a tiny from-scratch EchoSonar-R on synthetic studies,
    for tests (here and in other stages). Deterministic for a given ``seed``."""
    import torch

    from echosonar.config.reason import LMConfig
    from echosonar.reason.model import build_model
    from echosonar.reason.prompt import feature_dims
    from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

    studies = synthetic_studies(n, seed=seed)
    tok = train_tokenizer(corpus_from_studies(studies), vocab_size=vocab)
    cfg = LMConfig(hidden_size=hidden, layers=layers, heads=2, vocab_size=vocab, max_len=4096,
                   **lm_overrides)
    torch.manual_seed(seed)
    return studies, tok, build_model(cfg, tok, feature_dims(studies[0]))
