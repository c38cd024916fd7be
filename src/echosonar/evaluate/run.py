"""Score one results-table row: predictions (+ generations) against a split's ground truth.

``evaluate_predictions`` is the single scoring path for every row (classifier baselines and
VLMs alike); ``predict_vlm`` turns an EchoSonar-R checkpoint into predictions first.

Ground truth comes from the feature cache index (``io.features``: per study ``labels`` and
``report``), read without loading any tensor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.config.evaluate import EvalConfig
from echosonar.evaluate.predictions import StudyPrediction, prediction_from_generation
from echosonar.taxonomy import HEALTHY, LABEL_KEYS, REPORT_SECTIONS


def truth_from_features(features: str | Path, split: str) -> tuple[list[dict[str, Any]],
                                                                   dict[str, Any]]:
    """``(entries of the split, index meta)``; each entry has ``key``, ``labels``, ``report``."""
    from echosonar.io.features import FeatureCacheError, read_index

    index = read_index(features)
    entries = [e for e in index.get("studies", []) if e.get("split") == split]
    if not entries:
        splits = sorted({str(e.get("split")) for e in index.get("studies", [])})
        raise FeatureCacheError(f"feature cache {features} has no {split!r} studies "
                                f"(splits present: {', '.join(splits) or 'none'})")
    for e in entries:
        if not isinstance(e.get("labels"), dict):
            raise FeatureCacheError(f"{features}: study {e.get('key')!r} has no labels")
    return entries, {k: v for k, v in index.items() if k != "studies"}


def train_label_matrix(features: str | Path) -> np.ndarray | None:
    """``[N_train, L]`` training labels of a cache (for choosing the rarest labels), or None."""
    from echosonar.evaluate.classification import labels_to_array
    from echosonar.io.features import read_index

    rows = [e["labels"] for e in read_index(features).get("studies", [])
            if e.get("split") == "train" and isinstance(e.get("labels"), dict)]
    return labels_to_array(rows) if rows else None


def predict_vlm(model: Any, studies: Sequence[Any], batch_size: int = 8,
                max_new_tokens: int = 1280, log: Callable[[str], None] = print,
                thresholds: Mapping[str, float] | None = None, engine: str = "auto"
                ) -> dict[str, StudyPrediction]:
    """Greedy generations + label scores of an EchoSonar-R model for ``StudyFeatures``.

    Predicted labels are the parsed answer's findings (malformed -> empty set); scores are
    the label head's (``[B, L]`` probabilities, ``LABEL_KEYS`` order). With
    ``thresholds`` the decoding is guided (``reason.guided``: findings lists = head calls).
    ``engine``: the decode step (``reason.decode.make_step``: auto, int8 or hf).
    """
    import torch

    out: dict[str, StudyPrediction] = {}
    t0 = time.time()
    for i in range(0, len(studies), batch_size):
        batch = list(studies[i:i + batch_size])
        with torch.no_grad():
            texts, scores = model.generate(
                batch, max_new_tokens=max_new_tokens, do_sample=False,
                thresholds=None if thresholds is None else dict(thresholds), engine=engine,
                return_scores=True)  # the scores come from the decoding's prompt pass
            scores = scores.float().cpu().numpy()
        for sf, t, s in zip(batch, texts, scores, strict=True):
            out[sf.key] = prediction_from_generation(
                t[0], {k: float(v) for k, v in zip(LABEL_KEYS, s, strict=True)})
        log(f"  generated {min(i + batch_size, len(studies))}/{len(studies)} studies "
            f"({time.time() - t0:.0f} s)")
    return out


def label_head_thresholds(model: Any, studies: Sequence[Any], batch_size: int = 8
                          ) -> dict[str, float]:
    """Per-label thresholds maximising balanced accuracy of ``model.label_scores`` on
    ``studies`` (labels missing = negative; the baselines' rule,
    ``encode.metrics.choose_thresholds``). Unclipped: a cut above every score means "never"."""
    import torch

    from echosonar.encode.metrics import choose_thresholds

    with torch.no_grad():
        scores = np.concatenate([model.label_scores(list(studies[i:i + batch_size]))
                                 .float().cpu().numpy()
                                 for i in range(0, len(studies), batch_size)])
    y = np.array([[int((sf.labels or {}).get(k, 0)) for k in LABEL_KEYS] for sf in studies])
    return choose_thresholds(y, scores, LABEL_KEYS)


def decoding_thresholds(model: Any, features: str | Path, cfg: Any,
                        log: Callable[[str], None] = print) -> dict[str, float] | None:
    """Thresholds for ``cfg.decoding`` (``EvalConfig``): None for ``free``; for ``guided``
    the label head's per-label thresholds chosen on the labelled ``val`` split of ``features``
    (the baselines' rule; pass the training cache when scoring a shifted test-only cache).
    Never chosen on the evaluated split itself."""
    from echosonar.io.features import iter_features

    if cfg.decoding == "free":
        return None
    if cfg.decoding != "guided":
        raise ValueError(f"eval.decoding must be 'guided' or 'free', not {cfg.decoding!r}")
    if cfg.split == "val":
        raise ValueError("guided decoding chooses its thresholds on the val split, so it cannot "
                         "evaluate the val split; use --set eval.decoding=free")
    val = [sf for sf in iter_features(features, "val") if sf.labels is not None]
    if not val:
        raise ValueError(f"guided decoding needs labelled val studies in {features} to choose "
                         "the label head's thresholds; use --set eval.decoding=free")
    log(f"guided decoding: label-head thresholds chosen on {len(val)} val studies of "
        f"{features}")
    return label_head_thresholds(model, val, cfg.batch_size)


def label_head_at_val_thresholds(model: Any, features: str | Path,
                                 preds: Mapping[str, StudyPrediction],
                                 truth: Sequence[dict[str, Any]], batch_size: int = 8,
                                 thresholds: Mapping[str, float] | None = None
                                 ) -> dict[str, Any] | None:
    """The label head scored like the classifier baselines: per-label thresholds maximising
    BAcc on the cache's ``val`` split, applied to ``preds``' scores of ``truth``'s studies
    (``thresholds``: already chosen on that val split, e.g. by guided decoding).

    Returns ``{"macro_bacc", "macro_f1", "macro_auroc", "n_val", "per_label": {label: {"bacc",
    "sens", "spec", "thr", ...}}}`` (fractions), or None without labelled val studies.
    """
    from echosonar.encode.metrics import evaluate_scores
    from echosonar.evaluate.classification import labels_to_array
    from echosonar.io.features import iter_features

    val = [sf for sf in iter_features(features, "val") if sf.labels is not None]
    if not val or any(preds[e["key"]].scores is None for e in truth):
        return None
    thr = dict(thresholds) if thresholds else label_head_thresholds(model, val, batch_size)
    scores = np.array([[preds[e["key"]].scores[k] for k in LABEL_KEYS]  # type: ignore[index]
                       for e in truth])
    res = evaluate_scores(labels_to_array([e["labels"] for e in truth]), scores, thr,
                          LABEL_KEYS)
    return {**res, "n_val": len(val)}


def cutoff_rule_row(features: str | Path, truth: Sequence[dict[str, Any]], n_boot: int = 1000
                    ) -> dict[str, Any]:
    """The detector cut-off rule (:mod:`evaluate.cutoff_rule`) on ``truth``'s studies:
    ``{"macro_bacc", "macro_bacc_ci", "per_label": {label: bacc}}`` (fractions)."""
    from echosonar.evaluate.cutoff_rule import cutoff_rule_metrics
    from echosonar.io.features import load_study_features

    c = cutoff_rule_metrics([load_study_features(features, e) for e in truth], n_boot)
    return {"macro_bacc": c["macro_balanced_accuracy"],
            "macro_bacc_ci": c["macro_balanced_accuracy_ci"],
            "per_label": {k: v["balanced_accuracy"] for k, v in c["per_label"].items()}}


def _has_val(features: str | Path) -> bool:
    from echosonar.io.features import read_index

    return any(e.get("split") == "val" and isinstance(e.get("labels"), dict)
               for e in read_index(features).get("studies", []))


def check_protocol(meta: Mapping[str, Any], features: str | Path, wanted: str) -> str:
    """The feature cache's protocol (``"oracle"`` for caches that do not record one: they were
    built from a simulator's manifest hints); raises ``ValueError`` when it is not ``wanted``.
    """
    if wanted not in ("end-to-end", "oracle"):
        raise ValueError(f"eval.protocol must be 'end-to-end' or 'oracle', not {wanted!r}")
    got = str(meta.get("protocol") or "oracle")
    if got != wanted:
        hint = ("ingest the simulated set with `echosonar ingest SIM --end-to-end --view-model "
                "VIEW --split val --split test --out CACHE`, encode it, and score that cache; or "
                "pass --set eval.protocol=oracle to score this one as an ORACLE row"
                if got == "oracle" else "pass --set eval.protocol=end-to-end")
        raise ValueError(f"{features} is a {got!r}-protocol feature cache but eval.protocol is "
                         f"{wanted!r}: {hint}")
    return got


def protocol_label(protocol: str) -> str:
    """How outputs name a protocol: the oracle one is shouted, so it is never mistaken."""
    return ("ORACLE protocol (true views, sectors and phases)" if protocol == "oracle"
            else "end-to-end protocol")


def controls_rows(truth: Sequence[dict[str, Any]], train_features: str | Path, cfg: EvalConfig,
                  model_metrics: Mapping[str, Any], log: Callable[[str], None] = print
                  ) -> dict[str, Any]:
    """``{"controls": {control: {metric: value}}, "headline_check": {...}}`` -- the negative
    controls of :mod:`evaluate.controls` scored like the model on the same ``truth`` studies,
    and which of the model's metrics beat every control clearly."""
    from dataclasses import replace

    from echosonar.evaluate.controls import (
        control_predictions,
        control_summary,
        headline_check,
    )

    try:
        train, _ = truth_from_features(train_features, "train")
    except ValueError:
        train = []
    quiet = replace(cfg, bootstrap=0, green_judge="")
    full = {name: evaluate_predictions(preds, truth, quiet)
            for name, preds in control_predictions(truth, train, cfg.seed).items()}
    summary = control_summary(full)
    log("controls: " + "; ".join(f"{n} BAcc {_pct(v['macro_bacc'])} GREEN-rule "
                                 f"{_num(v['green_rule'])}" for n, v in summary.items()))
    return {"controls": _finite(summary),
            "headline_check": _finite(headline_check(model_metrics, summary))}


def _finite(x: Any) -> Any:
    """NaN -> None recursively, so the JSON is standard (NaN is not JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def evaluate_predictions(preds: Mapping[str, StudyPrediction], truth: Sequence[dict[str, Any]],
                         cfg: EvalConfig | None = None, train_labels: np.ndarray | None = None,
                         embedder: Any = None, llm_judge: Any = None) -> dict[str, Any]:
    """Every metric of the results table for one row.

    Args:
        preds: ``{key: StudyPrediction}``; every ``truth`` study must have one.
        truth: entries with ``key``, ``labels`` ({label: 0/1}) and ``report`` ({section: text}).
        train_labels: ``[N_train, L]``; the ``cfg.rare_k`` labels with fewest training positives
            get their own BAcc (falls back to the evaluated labels when None).
        embedder: a :class:`text_metrics.Embedder` (default: the shared MiniLM one).
        llm_judge: an optional :class:`green_llm.LLMJudge`.

    Returns a JSON-ready dict: ``classification`` (see ``classification_metrics``),
    ``rare_labels`` ({key: {bacc, ci, n_pos}}), and — when generations/reports exist —
    ``well_formed_rate``, ``reasoning`` (rates), ``green_rule``, ``text`` (BLEU-4, ROUGE-L,
    METEOR, embedding cosine, per section), optionally ``green_llm``; plus ``n_studies``.
    """
    from echosonar.evaluate.classification import (
        classification_metrics,
        labels_to_array,
        rarest_labels,
    )

    cfg = cfg or EvalConfig()
    keys = [e["key"] for e in truth]
    missing = [k for k in keys if k not in preds]
    if missing:
        raise ValueError(f"{len(missing)} of {len(keys)} studies have no prediction "
                         f"(e.g. {missing[:3]}); a predictions file must cover the whole split")
    y_true = labels_to_array([e["labels"] for e in truth])
    y_pred = labels_to_array([preds[k].labels for k in keys])
    have_scores = all(preds[k].scores is not None for k in keys)
    y_score = (np.array([[preds[k].scores[c] for c in LABEL_KEYS] for k in keys])  # type: ignore[index]
               if have_scores else None)
    cls = classification_metrics(y_true, y_pred, y_score, n_boot=cfg.bootstrap, seed=cfg.seed,
                                 level=cfg.ci_level)
    rare = rarest_labels(train_labels if train_labels is not None else y_true, k=cfg.rare_k)
    out: dict[str, Any] = {
        "n_studies": len(keys), "classification": cls, "scores_available": have_scores,
        "rare_labels": {k: {"balanced_accuracy": cls["per_label"][k]["balanced_accuracy"],
                            "balanced_accuracy_ci": cls["per_label"][k].get(
                                "balanced_accuracy_ci"),
                            "n_pos": cls["per_label"][k]["n_pos"]} for k in rare},
        "rare_labels_source": "train split" if train_labels is not None else "evaluated split",
    }

    gens = [preds[k].generation for k in keys]
    if any(g is not None for g in gens):
        from echosonar.evaluate.reasoning_checks import reasoning_check_rates
        from echosonar.textformat import ParsedOutput, parse_generation

        parsed = [parse_generation(g) if g is not None else ParsedOutput(False, ["none"])
                  for g in gens]
        rc = reasoning_check_rates(parsed, keys)
        out["well_formed_rate"] = rc["well_formed_rate"]
        out["reasoning"] = {k: v for k, v in rc.items() if k != "per_study"}
        out["reasoning_failures"] = {k: v["problems"] for k, v in rc["per_study"].items()
                                     if not v["all_pass"]}
        # diagnostic, not the answer: the findings the reasoning lines conclude, scored as if
        # they were the answer (healthy when none; a malformed generation predicts nothing, as
        # for the answer) -- where the decision is lost, between the lines and the answer
        lines = [(p.reasoning_findings or {HEALTHY.key}) if p.well_formed else set()
                 for p in parsed]
        rl = classification_metrics(y_true, labels_to_array(lines), None, n_boot=cfg.bootstrap,
                                    seed=cfg.seed, level=cfg.ci_level)
        out["reasoning_lines"] = {"macro_bacc": rl["macro_balanced_accuracy"],
                                  "macro_bacc_ci": rl.get("macro_balanced_accuracy_ci")}
        if all("views" in e for e in truth):  # citation fidelity against the prompt's evidence
            from echosonar.reason.grounding import fidelity_summary, light_study

            out["citations"] = fidelity_summary([g or "" for g in gens],
                                                [light_study(e) for e in truth])
    elif any(preds[k].well_formed is not None for k in keys):
        out["well_formed_rate"] = float(np.mean([bool(preds[k].well_formed) for k in keys]))

    reports = [preds[k].report for k in keys]
    # A VLM row is scored on its reports even when every generation is malformed (all zero).
    if any(r is not None for r in reports) or any(g is not None for g in gens):
        from echosonar.evaluate.green import green_rule_batch
        from echosonar.evaluate.text_metrics import report_text_metrics

        refs = [e.get("report") or {} for e in truth]
        if any(set(REPORT_SECTIONS) - set(r) for r in refs):
            raise ValueError("ground-truth reports must have every taxonomy.REPORT_SECTIONS "
                             "section to score report text")
        out["green_rule"] = green_rule_batch(refs, reports)
        if cfg.text_metrics:
            tm = report_text_metrics(refs, reports, use_meteor=cfg.meteor,
                                     use_embedding=cfg.embedding, embedder=embedder)
            out["text"] = {k: v for k, v in tm.items() if k != "per_study"}
        if llm_judge is not None:
            from echosonar.evaluate.green import report_to_text
            from echosonar.evaluate.green_llm import summarize

            n = cfg.green_judge_max_studies or len(keys)
            res = llm_judge.judge([report_to_text(r) for r in refs[:n]],
                                  [report_to_text(r or {}) for r in reports[:n]])
            out["green_llm"] = summarize(res)
    return _finite(out)


def _pct(v: Any, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def metrics_markdown(m: Mapping[str, Any], title: str = "Evaluation") -> str:
    """A Markdown summary of :func:`evaluate_predictions` output (+ a per-label table)."""
    c = m["classification"]
    ci = c.get("macro_balanced_accuracy_ci") or [None, None]
    lines = [f"# {title}", "", f"{m['n_studies']} studies.", "",
             "| metric | value |", "|---|---|",
             f"| macro BAcc (%) | {_pct(c['macro_balanced_accuracy'])} "
             f"[{_pct(ci[0])}, {_pct(ci[1])}] |",

             f"| macro F1 (%) | {_pct(c['macro_f1'])} |",
             f"| macro AUROC (%) | {_pct(c['macro_auroc'])} |"]
    if "label_head_val_thresholds" in m:
        h = m["label_head_val_thresholds"]
        lines.append(f"| label head: macro BAcc at val-chosen thresholds (%) (not the answer) | "
                     f"{_pct(h['macro_bacc'])} |")
    if "cutoff_rule" in m:
        lines.append(f"| detector cut-off rule: macro BAcc (%) (reference, no learning) | "
                     f"{_pct(m['cutoff_rule']['macro_bacc'])} |")
    for k, v in m.get("rare_labels", {}).items():
        lines.append(f"| BAcc {k} (%) (n_pos={v['n_pos']}) | {_pct(v['balanced_accuracy'])} |")
    if "green_rule" in m:
        lines.append(f"| GREEN-rule | {_num(m['green_rule']['green_rule'])} |")
    if "text" in m:
        t = m["text"]
        lines += [f"| BLEU-4 | {_num(t['bleu4'])} |", f"| ROUGE-L | {_num(t['rougeL'])} |",
                  f"| METEOR | {_num(t['meteor'])} ({t['meteor_status']}) |",
                  f"| MiniLM cosine | {_num(t['embed_cosine'])} |"]
    if "well_formed_rate" in m:
        lines.append(f"| well-formed (%) | {_pct(m['well_formed_rate'])} |")
    if "reasoning" in m:
        r = m["reasoning"]
        if "agreement_rate" in r:
            lines.append(f"| reasoning agrees with answer (%) | {_pct(r['agreement_rate'])} |")
        lines += [f"| findings grounded in an assessable view (%) | {_pct(r['grounded_rate'])} |",
                  f"| no finding from an unassessable view (%) | "
                  f"{_pct(r['no_unassessable_claims_rate'])} |"]
    if "reasoning_lines" in m:
        rl = m["reasoning_lines"]
        ci = rl.get("macro_bacc_ci") or [None, None]
        lines.append(f"| reasoning lines' findings: macro BAcc (%) (diagnostic, not the answer) "
                     f"| {_pct(rl['macro_bacc'])} [{_pct(ci[0])}, {_pct(ci[1])}] |")
    if "forced_by_guided_decoding" in m:
        f = m["forced_by_guided_decoding"]
        lines.append(f"| (forced by guided decoding, not the model's) well-formed / agreement (%) "
                     f"| {_pct(f.get('well_formed_rate'))} / "
                     f"{_pct(f.get('reasoning_agreement_rate'))} |")
    if "green_llm" in m:
        lines.append(f"| GREEN (LLM judge) | {_num(m['green_llm']['green_llm'])} |")
    if "controls" in m:
        from echosonar.evaluate.controls import CONTROL_METRICS

        names = [short for _, short in CONTROL_METRICS]
        lines += ["", "Negative controls on the same studies (a metric the model does not beat "
                  "by 0.05 over every control is not a headline metric):", "",
                  "| row | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        hc = m.get("headline_check", {})
        lines.append("| this model | " + " | ".join(
            _num(hc[n]["model"]) + ("" if hc[n]["passes"] else " (fails)") if n in hc else "–"
            for n in names) + " |")
        for cname, vals in m["controls"].items():
            lines.append(f"| {cname} | " + " | ".join(
                _num(vals.get(n)) if vals.get(n) is not None else "–" for n in names) + " |")
    if c.get("one_class_labels"):
        lines += ["", "Labels with one class in this split (no balanced accuracy or AUROC; left "
                  "out of the macro means): " + ", ".join(c["one_class_labels"]) + "."]
    lines += ["", "| label | pos | neg | sens | spec | BAcc | F1 | AUROC |",
              "|---|---|---|---|---|---|---|---|"]
    for k, v in c["per_label"].items():
        lines.append(f"| {k} | {v['n_pos']} | {v['n_neg']} | {_pct(v['sensitivity'])} | "
                     f"{_pct(v['specificity'])} | {_pct(v['balanced_accuracy'])} | "
                     f"{_pct(v['f1'])} | {_pct(v['auroc'])} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# `echosonar evaluate`: resolve the source, predict if needed, score, write JSON + Markdown
# ---------------------------------------------------------------------------------------------

_CKPT_SUBDIRS = ("model", "final", "checkpoint")


def _is_vlm_checkpoint(d: Path) -> bool:
    import json

    try:
        return json.loads((d / "config.json").read_text()).get("kind") == "echosonar_r"
    except (OSError, ValueError, AttributeError):
        return False


def resolve_source(source: Path, split: str) -> tuple[str, Path]:
    """``("predictions", file)`` or ``("checkpoint", folder)`` for RUN_OR_CHECKPOINT."""
    if source.is_file():
        return "predictions", source
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is neither a predictions file nor a folder")
    if _is_vlm_checkpoint(source):
        return "checkpoint", source
    if (source / f"predictions_{split}.json").is_file():
        return "predictions", source / f"predictions_{split}.json"
    for sub in _CKPT_SUBDIRS:
        if _is_vlm_checkpoint(source / sub):
            return "checkpoint", source / sub
    raise FileNotFoundError(
        f"{source}: no predictions_{split}.json and no EchoSonar-R checkpoint (config.json of "
        f"kind 'echosonar_r') in it or in {', '.join(_CKPT_SUBDIRS)}/")


def evaluate_source(source: Path, features: Path, cfg: EvalConfig, preset: str | None = None,
                    out: Path | None = None, name: str | None = None,
                    train_features: Path | None = None,
                    log: Callable[[str], None] = print,
                    command: str | None = None) -> dict[str, Any]:
    """Score ``source`` on ``cfg.split`` of ``features``; write metrics JSON and Markdown
    (``command``: the command line that asked for it, kept in the metrics for RESULTS.md).

    Returns ``{"metrics", "json", "markdown", "name", "predictions"}`` (paths as ``Path``).
    """
    from echosonar.evaluate.predictions import (
        PredictionsError,
        read_predictions,
        write_predictions,
    )
    from echosonar.io.atomic import atomic_write_json, atomic_write_text
    from echosonar.utils.repro import run_info

    kind, path = resolve_source(source, cfg.split)
    truth, meta = truth_from_features(features, cfg.split)
    protocol = check_protocol(meta, features, cfg.protocol)
    cache_preset = meta.get("preset") or (meta.get("sim") or {}).get("preset")
    if preset and cache_preset and preset != cache_preset:
        raise ValueError(f"--preset {preset!r} but the feature cache {features} was built from "
                         f"preset {cache_preset!r}")
    preset = preset or cache_preset
    if cfg.max_studies:
        truth = truth[:cfg.max_studies]
    suffix = f"{cfg.split}" + (f"_{preset}" if preset and preset != "default" else "")
    base = path.parent if kind == "predictions" else (
        path.parent if path.name in _CKPT_SUBDIRS else path)
    out = out or (base / "eval" if kind == "checkpoint" else base)
    pred_file = path
    if kind == "predictions":
        pmeta, preds = read_predictions(path)
        if pmeta.get("split") not in (None, cfg.split):
            raise PredictionsError(f"{path} holds {pmeta.get('split')!r} predictions, but the "
                                   f"evaluated split is {cfg.split!r}")
        name = name or str(pmeta.get("method") or path.stem)
    else:
        import torch

        from echosonar.io.features import load_study_features
        from echosonar.reason.model import EchoSonarR
        from echosonar.utils.repro import pick_device

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        device = pick_device(cfg.device)
        log(f"loading EchoSonar-R from {path} on {device}")
        model = EchoSonarR.from_pretrained(path, map_location=device)
        studies = [load_study_features(features, e) for e in truth]
        # the evaluated cache's own val split (an end-to-end cache has one), else the val split
        # of the reference cache (--train-features), e.g. for a test-only shifted cache
        own_val = _has_val(features)
        thr = decoding_thresholds(model, features if own_val else
                                  (train_features or features), cfg, log)
        preds = predict_vlm(model, studies, cfg.batch_size, cfg.max_new_tokens, log, thr,
                            cfg.engine)
        name = name or base.name
        pred_file = write_predictions(out / f"predictions_{suffix}.json", preds, name, cfg.split,
                                      checkpoint=str(path), features=str(features),
                                      decoding=cfg.decoding, thresholds=thr,
                                      engine=cfg.engine)
    judge = None
    if cfg.green_judge:
        from echosonar.evaluate.green_llm import LLMJudge
        from echosonar.utils.repro import pick_device

        judge = LLMJudge(cfg.green_judge, device=pick_device(cfg.device))
    metrics = evaluate_predictions(preds, truth, cfg,
                                   train_labels=train_label_matrix(train_features or features),
                                   llm_judge=judge)
    if kind == "checkpoint" and cfg.decoding == "guided":
        # the skeleton and every findings list were forced: these rates measure the forcing,
        # not the model, so they are kept apart and never printed as the model's
        forced = {"well_formed_rate": metrics.pop("well_formed_rate", None)}
        if "reasoning" in metrics:
            forced["reasoning_agreement_rate"] = metrics["reasoning"].pop("agreement_rate", None)
        metrics["forced_by_guided_decoding"] = forced
    if kind == "checkpoint" and cfg.split != "val":
        head = label_head_at_val_thresholds(model, features, preds, truth, cfg.batch_size,
                                            thr if own_val else None)
        if head is not None:
            metrics["label_head_val_thresholds"] = _finite(head)
    metrics["cutoff_rule"] = _finite(cutoff_rule_row(features, truth, cfg.bootstrap))
    if cfg.controls:
        metrics.update(controls_rows(truth, train_features or features, cfg, metrics, log))
    metrics["source"] = {"name": name, "kind": kind, "path": str(path),
                         "predictions": str(pred_file), "features": str(features),
                         "split": cfg.split, "preset": preset or "default",
                         "protocol": protocol, "command": command,
                         "decoding": cfg.decoding if kind == "checkpoint" else None}
    metrics["run_info"] = run_info(cfg.seed)
    jpath, mpath = out / f"metrics_{suffix}.json", out / f"metrics_{suffix}.md"
    atomic_write_json(jpath, metrics)
    title = (f"{name} — {cfg.split} split" + (f", {preset} preset" if preset else "")
             + f", {protocol_label(protocol)}"
             + (f", {cfg.decoding.upper()} decoding" if kind == "checkpoint" else ""))
    atomic_write_text(mpath, metrics_markdown(metrics, title))
    return {"metrics": metrics, "json": jpath, "markdown": mpath, "name": name,
            "predictions": pred_file}
