"""Token sampling and batched prediction (generation + parsing + label scores) for evaluation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from echosonar.schema import StudyFeatures
from echosonar.taxonomy import LABEL_KEYS
from echosonar.textformat import parse_generation


def predict(model: Any, studies: Iterable[StudyFeatures], batch_size: int = 8,
            max_new_tokens: int = 1280) -> list[dict[str, Any]]:
    """Greedy generations, parsed, plus the auxiliary-head scores, one dict per study:

    ``{"key", "text", "well_formed", "errors", "findings" (sorted keys), "sections",
    "scores" {label_key: p}}``.
    """
    studies = list(studies)
    out: list[dict[str, Any]] = []
    for i in range(0, len(studies), batch_size):
        batch = studies[i:i + batch_size]
        texts, scores = model.generate(batch, max_new_tokens=max_new_tokens, return_scores=True)
        scores = scores.float().cpu().numpy()
        for sf, (text,), sc in zip(batch, texts, scores, strict=True):
            p = parse_generation(text)
            out.append({"key": sf.key, "text": text, "well_formed": p.well_formed,
                        "errors": p.errors, "findings": sorted(p.findings),
                        "sections": p.sections,
                        "scores": {k: float(s) for k, s in zip(LABEL_KEYS, sc, strict=True)}})
    return out


def tune_thresholds(model: Any, studies: list[StudyFeatures], batch_size: int = 8
                    ) -> dict[str, float]:
    """Per-label threshold on the auxiliary head's scores maximising balanced accuracy over
    ``studies`` (use the val split): the baselines' rule, ``encode.metrics.choose_thresholds``
    (0.5 for labels with a single class there)."""
    import numpy as np

    from echosonar.encode.metrics import choose_thresholds

    with torch.no_grad():
        sc = torch.cat([model.label_scores(studies[i:i + batch_size]).float().cpu()
                        for i in range(0, len(studies), batch_size)]).numpy()
    y = np.array([[sf.labels[k] for k in LABEL_KEYS] for sf in studies])
    return choose_thresholds(y, sc, LABEL_KEYS)


def score_predictions(preds: list[dict[str, Any]], studies: list[StudyFeatures],
                      thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Quick SFT metrics (the evaluate stage owns the full protocol).

    ``parse_rate``: fraction well-formed. ``macro_bacc_generated``: the project's macro BAcc
    (:func:`echosonar.utils.metrics.macro_balanced_accuracy`) of the generated answer (a
    malformed answer counts as its parsed findings, usually none). ``macro_bacc_head@0.5`` /
    ``macro_auroc_head``: the auxiliary head; ``citations``: citation fidelity of the reasoning
    (:func:`echosonar.reason.grounding.fidelity_summary`); with ``thresholds`` (:func:`tune_thresholds` on val) also
    ``macro_bacc_head@val_thr``. ``bleu4`` (sacrebleu, corpus, 0..1) / ``rougeL`` (mean F) over
    the report sections joined in order. Labels with a single class in ``studies`` are left out
    of a macro mean (``n_labels_scored`` labels remain, the others are in ``one_class_labels``).
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from echosonar.taxonomy import REPORT_SECTIONS
    from echosonar.utils.metrics import macro_balanced_accuracy

    truth = {sf.key: sf for sf in studies}
    keys = [p["key"] for p in preds]
    y = np.array([[truth[k].labels[lk] for lk in LABEL_KEYS] for k in keys])
    gen = np.array([[int(lk in p["findings"]) for lk in LABEL_KEYS] for p in preds])
    sc = np.array([[p["scores"][lk] for lk in LABEL_KEYS] for p in preds])
    gen_bacc = macro_balanced_accuracy(y, gen, LABEL_KEYS)
    ok = [j for j, k in enumerate(LABEL_KEYS) if k not in gen_bacc["one_class_labels"]]
    out: dict[str, Any] = {
        "n": len(preds), "parse_rate": float(np.mean([p["well_formed"] for p in preds])),
        "n_labels_scored": gen_bacc["n_labels"],
        "one_class_labels": gen_bacc["one_class_labels"],
        "macro_bacc_generated": gen_bacc["macro_bacc"],
        "macro_bacc_head@0.5": macro_balanced_accuracy(y, sc > 0.5)["macro_bacc"],
        "macro_auroc_head": float(np.mean([roc_auc_score(y[:, j], sc[:, j]) for j in ok]))
        if ok else float("nan"),
        "per_label_bacc_generated": {k: v for k, v in gen_bacc["per_label"].items()
                                     if v is not None},
    }
    from echosonar.reason.grounding import fidelity_summary

    if all("text" in p for p in preds):
        out["citations"] = fidelity_summary([p["text"] for p in preds],
                                            [truth[k] for k in keys])
    if thresholds:
        thr = np.array([thresholds[k] for k in LABEL_KEYS])
        out["macro_bacc_head@val_thr"] = macro_balanced_accuracy(y, sc >= thr)["macro_bacc"]

    def norm(t: str) -> str:  # the answer block stores sections as textformat renders them
        return " ".join(t.split()).rstrip(".")

    hyp = [". ".join(norm(p["sections"][s]) for s in REPORT_SECTIONS if p["sections"].get(s))
           for p in preds]
    ref = [". ".join(norm(truth[k].report.get(s, "")) for s in REPORT_SECTIONS) for k in keys]
    try:
        import sacrebleu
        from rouge_score import rouge_scorer

        out["bleu4"] = sacrebleu.corpus_bleu(hyp, [ref]).score / 100
        rs = rouge_scorer.RougeScorer(["rougeL"])
        out["rougeL"] = float(np.mean([rs.score(r, h)["rougeL"].fmeasure
                                       for r, h in zip(ref, hyp, strict=True)]))
    except ImportError:  # text metrics are optional here
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m echosonar.reason.generate FEATURES MODEL_DIR [--split test] [--limit N]``:
    greedy predictions + :func:`score_predictions`, printed as JSON (and written with --out)."""
    import argparse
    import json

    from echosonar.io.atomic import atomic_write_json
    from echosonar.reason.data import load_split
    from echosonar.reason.model import EchoSonarR

    ap = argparse.ArgumentParser(prog="python -m echosonar.reason.generate")
    ap.add_argument("features")
    ap.add_argument("model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = EchoSonarR.from_pretrained(a.model)
    studies = load_split(a.features, a.split, limit=a.limit)
    val = load_split(a.features, "val")
    thr = tune_thresholds(model, val, a.batch_size) if val else None
    preds = predict(model, studies, a.batch_size, a.max_new_tokens)
    metrics = score_predictions(preds, studies, thr)
    print(json.dumps(metrics, indent=1))
    if a.out:
        atomic_write_json(a.out, {"metrics": metrics, "predictions": preds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
