"""Detector evaluation: COCO mAP per class (pycocotools), clip presence, measurement error.

COCO setup: every frame is an image, every ground-truth box an annotation (one per present
class), and the detector submits all K class boxes of every frame with their presence scores,
so a confident box for an absent structure counts as a false positive. Boxes are evaluated in
pixels of a ``size`` x ``size`` frame. ``mAP@0.5`` and ``mAP@[.5:.95]`` are the means over the
classes that have ground truth in the evaluated set.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from echosonar.detect.data import clip_targets
from echosonar.detect.infer import ClipDetections, detect_study
from echosonar.detect.measure import RULES
from echosonar.detect.model import Detector
from echosonar.schema import Study
from echosonar.taxonomy import STRUCTURES

K = len(STRUCTURES)
#: measurement keys compared with the simulator's ground truth (detector key -> truth key)
MEASURE_KEYS: dict[str, str] = {
    "lvedd_cm": "lvedd_cm", "lvesd_cm": "lvesd_cm", "ef_proxy_pct": "ef_pct",
    "la_ap_cm": "la_ap_cm", "ra_minor_cm": "ra_minor_cm", "rv_basal_cm": "rv_basal_cm",
    "mr_jet_ratio": "mr_jet_ratio", "tr_jet_ratio": "tr_jet_ratio",
    "ar_jet_ratio": "ar_jet_ratio", "pe_depth_cm": "pe_depth_cm",
}


def coco_map(gt_present: np.ndarray, gt_boxes: np.ndarray, scores: np.ndarray,
             boxes: np.ndarray, size: int = 64) -> dict[str, Any]:
    """COCO box mAP with pycocotools.

    gt_present bool [N, K]; gt_boxes [N, K, 4] and boxes [N, K, 4] xyxy in 0..1; scores [N, K].
    Returns ``{"map50", "map", "per_class": {name: {"ap50", "ap", "n_gt"}}}`` (AP is None for
    classes without ground truth).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n = gt_present.shape[0]

    def xywh(b: np.ndarray) -> list[float]:
        x0, y0, x1, y1 = (np.clip(b, 0, 1) * size).tolist()
        return [x0, y0, max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)]

    images = [{"id": i + 1, "width": size, "height": size} for i in range(n)]
    anns = []
    for i, k in zip(*np.nonzero(gt_present), strict=True):
        bb = xywh(gt_boxes[i, k])
        anns.append({"id": len(anns) + 1, "image_id": int(i) + 1, "category_id": int(k) + 1,
                     "bbox": bb, "area": bb[2] * bb[3], "iscrowd": 0})
    cats = [{"id": k + 1, "name": s} for k, s in enumerate(STRUCTURES)]
    dets = [{"image_id": i + 1, "category_id": k + 1, "bbox": xywh(boxes[i, k]),
             "score": float(scores[i, k])} for i in range(n) for k in range(K)]
    per_class: dict[str, dict[str, Any]] = {
        s: {"ap50": None, "ap": None, "n_gt": int(gt_present[:, k].sum())}
        for k, s in enumerate(STRUCTURES)}
    if not anns or not dets:
        return {"map50": None, "map": None, "per_class": per_class, "frames": n}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"]  # [iou thresholds, recall points, classes, areas, maxDets]
    ap50s, aps = [], []
    for k, s in enumerate(STRUCTURES):
        p = prec[:, :, k, 0, -1]
        if per_class[s]["n_gt"] == 0 or (p > -1).sum() == 0:
            continue
        ap50 = float(np.mean(p[0][p[0] > -1]))
        ap = float(np.mean(p[p > -1]))
        per_class[s].update(ap50=ap50, ap=ap)
        ap50s.append(ap50)
        aps.append(ap)
    return {"map50": float(np.mean(ap50s)), "map": float(np.mean(aps)), "per_class": per_class,
            "frames": n}


def presence_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Clip-level presence precision/recall per class. gt, pred bool [N_clips, K]."""
    out = {}
    for k, s in enumerate(STRUCTURES):
        tp = int((gt[:, k] & pred[:, k]).sum())
        fp = int((~gt[:, k] & pred[:, k]).sum())
        fn = int((gt[:, k] & ~pred[:, k]).sum())
        out[s] = {"precision": tp / (tp + fp) if tp + fp else None,
                  "recall": tp / (tp + fn) if tp + fn else None, "n_gt": tp + fn}
    return out


def evaluate_studies(model: Detector, studies: Iterable[Study],
                     collect_calibration: bool = False,
                     calibrations: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Run the detector on studies with ground truth and score it.

    Returns ``{"coco", "presence", "measure_mae", "measure_n", "n_studies", "n_clips"}``;
    ``calibrations`` ``{name: coefficients [R, 3]}`` adds ``"measure_mae_<name>"``: the same
    detections measured with other coefficients. With ``collect_calibration``,
    ``"calib_samples"``: ``[(rule, f1, f2, truth)]`` for
    :func:`echosonar.detect.measure.fit_calibration`.
    """
    from echosonar.detect.measure import apply_rules, study_measurements

    gp, gb, ps, pb, cg, cp = [], [], [], [], [], []
    variants = {"": None, **(calibrations or {})}
    errs: dict[str, dict[str, list[float]]] = {v: {k: [] for k in MEASURE_KEYS} for v in variants}
    samples: list[tuple[int, float, float, float]] = []
    n_studies = n_clips = 0
    size = model.config.image_size
    for study in studies:
        dets = detect_study(model, study)
        n_studies += 1
        for clip, det in zip(study.clips, dets, strict=True):
            if clip.boxes is None:
                continue
            n_clips += 1
            present, boxes = clip_targets(clip)
            gp.append(present)
            gb.append(boxes)
            ps.append(det.scores)
            pb.append(det.boxes)
            cg.append(present.any(0))
            cp.append(det.present)
            if collect_calibration and study.measurements:
                samples += _calib_samples(det, study.measurements)
        if not study.measurements:
            continue
        for name, calib in variants.items():
            per_clip = [d.measurements if calib is None else
                        apply_rules(d.view, d.meta.get("features", []), calib) for d in dets]
            est = study_measurements(per_clip)
            for k, tk in MEASURE_KEYS.items():
                if k in est and tk in study.measurements and \
                        math.isfinite(float(study.measurements[tk])):
                    errs[name][k].append(abs(est[k] - float(study.measurements[tk])))
    if not gp:
        raise ValueError("no clip with ground-truth boxes to evaluate")
    out = {
        "coco": coco_map(np.concatenate(gp), np.concatenate(gb), np.concatenate(ps),
                         np.concatenate(pb), size),
        "presence": presence_metrics(np.stack(cg), np.stack(cp)),
        "measure_n": {k: len(v) for k, v in errs[""].items()},
        "n_studies": n_studies, "n_clips": n_clips,
    }
    for name, e in errs.items():
        out["measure_mae" + (f"_{name}" if name else "")] = {
            k: float(np.mean(v)) if v else None for k, v in e.items()}
    if collect_calibration:
        out["calib_samples"] = samples
    return out


def _calib_samples(det: ClipDetections, truth: dict[str, Any]) -> list:
    """``(rule, f1, f2, truth)`` for rules whose structure the detector found in this clip."""
    out = []
    for i, f1, f2 in det.meta.get("features", []):
        key = RULES[i].key
        if f1 is not None and key in truth and math.isfinite(float(truth[key])):
            out.append((i, f1, f2, float(truth[key])))
    return out
