"""``analyze_study``: files of one study -> result dict (``result.json``) + keyframes.

The app owns no model logic: every step is a call into a stage through the thin adapters of
:mod:`echosonar.app.stages` (tests pass a fake ``stages`` object with the same functions)::

    ingest (decode + preprocess) -> view classification of unknown views -> OOD guard
    -> per clip: detect -> encode -> StudyFeatures -> greedy generation + label scores
    -> strict parse

The OOD guard (:mod:`echosonar.ingest.view_ood`, through ``stages.assess_ood``) scores every
clip against the view classifier's training data: a clip it rejects (``out``: not cardiac
ultrasound) becomes OTHER and is neither detected nor encoded; a study without any clip of a
standard view is ``not_assessable`` (no detection, no generation); an analysed clip that is
``unusual`` gets a warning and the study's findings are withheld (no call, no stated answer,
no report text; the raw generation stays for audit).

What the app adds is bookkeeping: thresholds from the bundle, "missing view" and "skipped file"
warnings, keyframe choice, stage timings, peak memory, and a result that validates against
:data:`echosonar.app.result.RESULT_SCHEMA`. Inputs are named in warnings by their position in the
input list, never by file name (names often carry patient identifiers).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.app.bundle import Bundle
from echosonar.app.result import SCHEMA_NAME, SCHEMA_VERSION, TIMING_KEYS, assert_valid
from echosonar.taxonomy import (
    FINDING_BY_KEY,
    LABEL_KEYS,
    LABELS,
    OTHER_VIEW,
    REPORT_SECTION_TITLES,
    REPORT_SECTIONS,
    VIEWS,
    assessable,
)
from echosonar.textformat import parse_generation

#: progress(stage, fraction_done_overall) — called as each stage starts; fraction in [0, 1].
Progress = Callable[[str, float], None]
STAGE_PLAN = (("ingest", 0.0), ("view", 0.15), ("detect", 0.2), ("generate", 0.5),
              ("report", 0.95))
STAGE_LABELS = {"queued": "waiting for a free worker", "ingest": "reading DICOM / video files",
                "view": "classifying views", "detect": "detecting structures, encoding clips",
                "generate": "writing the reasoning and report", "report": "assembling the report",
                "done": "done"}
LOW_VIEW_CONF = 0.5
OOD_LEVELS = ("in", "unusual", "out")


class AnalysisError(ValueError):
    """The inputs cannot be analysed as one study (no readable clip, several studies...)."""


@dataclass
class Analysis:
    """``result``: the JSON-able result dict; ``keyframes[clip_index] = {"ed": frame,
    "es": frame}`` with frames float ``[C, H, W]`` in [0, 1] (for the report page only)."""

    result: dict[str, Any]
    keyframes: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


class StageTimer:
    """Accumulates wall-clock seconds per stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


class PeakMemory:
    """Peak resident memory (MiB) of this process during a block.

    On Linux the kernel's high-water mark is reset on entry (``/proc/self/clear_refs``), so the
    number covers the block only; elsewhere it falls back to the process-lifetime peak. With
    concurrent analyses (the server) it is the process peak while this one ran.
    """

    def __enter__(self) -> PeakMemory:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @staticmethod
    def peak_mb() -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        except (ImportError, OSError):
            return None


def _default_stages() -> Any:
    from echosonar.app import stages

    return stages


def analyze_study(paths: Sequence[str | Path] | str | Path, bundle: Bundle, cfg: Any = None,
                  progress: Progress | None = None, stages: Any = None) -> Analysis:
    """Analyse the files (or folders) of ONE study with a loaded :class:`Bundle`.

    ``cfg`` is an ``EchoSonarConfig`` (ingest settings; None = defaults). Raises
    :class:`AnalysisError` when no clip is readable or the inputs hold several studies.
    """
    stages = stages or _default_stages()
    if cfg is None:
        from echosonar.config import load_config

        cfg = load_config()
    report = progress or (lambda stage, frac: None)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    timer = StageTimer()
    warnings: list[str] = []
    t_start = time.perf_counter()
    with PeakMemory() as mem:
        report("ingest", 0.0)
        with timer("ingest"):
            studies, skipped = stages.ingest(paths, cfg)
        # file names may carry identifiers: skipped inputs are referred to by order, and any
        # known file name inside a message is replaced
        names = {n for n, _ in skipped} | {c.source for s in studies for c in s.clips}
        for i, (_, reason) in enumerate(skipped):
            warnings.append(f"skipped file {i + 1} of {len(skipped)}: {_scrub(reason, names)}")
        studies = [s for s in studies if s.clips]
        if not studies:
            raise AnalysisError("no readable echo clip among the inputs"
                                + (f" ({len(skipped)} file(s) skipped: "
                                   + "; ".join(sorted({_scrub(r, names) for _, r in skipped}))
                                   + ")" if skipped else ""))
        if len(studies) > 1:
            raise AnalysisError(f"the inputs hold {len(studies)} different studies; analyse one "
                                "study at a time (echosonar analyze --batch takes one folder "
                                "per study)")
        study = studies[0]
        warnings += [_scrub(w, names) for w in study.warnings]
        report("view", STAGE_PLAN[1][1])
        unknown = [c.view_conf == 0.0 for c in study.clips]
        if any(unknown):
            if bundle.view_classifier is None:
                raise AnalysisError("some clips have no view label and the model bundle has no "
                                    "view classifier (add one: echosonar train view-classifier)")
            with timer("view"):
                stages.label_views(study, bundle.view_classifier, cfg)
        with timer("view"):
            ood = guard_clips(study, bundle, stages)
        # clips the guard rejects are not cardiac ultrasound: OTHER, and never analysed
        keep = [i for i, o in enumerate(ood) if not (o and o.get("level") == "out")]
        dets: list[Any] = [None] * len(study.clips)
        text, scores = "", None
        if any(study.clips[i].view in VIEWS for i in keep):
            report("detect", STAGE_PLAN[2][1])
            sub = study if len(keep) == len(study.clips) else \
                dataclasses.replace(study, clips=[study.clips[i] for i in keep])
            sf, sub_dets = stages.features(bundle, sub, cfg, timer)
            for i, d in zip(keep, sub_dets, strict=True):
                dets[i] = d
            report("generate", STAGE_PLAN[3][1])
            with timer("generate"):
                text, scores = stages.generate(bundle.vlm, sf, bundle.spec.max_new_tokens,
                                               _guide(cfg, bundle.spec.thresholds),
                                               cfg.app.engine)
        report("report", STAGE_PLAN[4][1])
    timing = {k: round(timer.seconds.get(k, 0.0), 4) for k in TIMING_KEYS if k != "total"}
    timing["total"] = round(time.perf_counter() - t_start, 4)
    analysis = build_result(study, unknown, dets, text, scores, bundle, warnings, timing,
                            mem.peak_mb(), stages, ood)
    assert_valid(analysis.result)
    report("done", 1.0)
    return analysis


def guard_clips(study: Any, bundle: Bundle, stages: Any) -> list[dict[str, Any] | None]:
    """The view classifier's out-of-distribution guard on every clip (None per clip when there
    is no classifier or the stages have no guard). Clips it rejects become ``OTHER``; the view
    the classifier gave them is kept in their ``classifier_view``."""
    guard = getattr(stages, "assess_ood", None)
    if guard is None or bundle.view_classifier is None:
        return [None] * len(study.clips)
    ood = [dict(o) for o in guard(study, bundle.view_classifier)]
    for clip, o in zip(study.clips, ood, strict=True):
        o["classifier_view"] = clip.view
        if o.get("level") == "out":
            clip.view = OTHER_VIEW
    return ood


def _ood_summary(clips: list[dict[str, Any]], present: list[str]) -> dict[str, Any]:
    """Study-level guard verdict: the worst level among the clips, whether the findings are
    withheld (no clip of a standard view, or an analysed clip unlike the training data) and
    why, in words."""
    checked = [c for c in clips if c["ood"] and c["ood"].get("level")]
    worst = max((OOD_LEVELS.index(c["ood"]["level"]) for c in checked), default=-1)
    unusual = [c for c in checked if c["ood"]["level"] == "unusual" and c["view"] in VIEWS]
    rejected = [c for c in checked if c["ood"]["level"] == "out"]
    assessable_views = [v for v in present if v in VIEWS]
    reasons = []
    if not assessable_views:
        reasons.append("no clip shows a standard cardiac view"
                       + (f" ({len(rejected)} clip(s) not recognisable as cardiac ultrasound)"
                          if rejected else ""))
    if unusual:
        reasons.append(f"{len(unusual)} analysed clip(s) unlike the training data: "
                       + ", ".join(f"{c['label']} {c['view']} (OOD distance "
                                   f"{c['ood']['score']:.2f} >= {c['ood']['warn_at']:.2f})"
                                   for c in unusual))
    return {"checked": bool(checked), "level": OOD_LEVELS[worst] if worst >= 0 else None,
            "withheld": bool(reasons), "reason": "; ".join(reasons) or None}


def _scrub(message: str, names: set[str]) -> str:
    """``message`` without file names: a leading ``"<name>: "`` (how ingest prefixes its
    warnings) is dropped and any other occurrence becomes "another file"."""
    for name in sorted((n for n in names if n), key=len, reverse=True):
        if message.startswith(name + ": "):
            message = message[len(name) + 2:]
        message = message.replace(name, "another file")
    return message


def build_result(study: Any, unknown: list[bool], dets: list[Any], text: str,
                 scores: Sequence[float] | None, bundle: Bundle, warnings: list[str],
                 timing: dict[str, float], peak_mb: float | None,
                 stages: Any, ood: Sequence[dict[str, Any] | None] | None = None) -> Analysis:
    """Assemble the result dict from the stages' outputs (pure bookkeeping, no model calls).

    A clip without detections (``dets[i] is None``: rejected by the OOD guard, or a study with
    no standard view) gets no structures and no measurements."""
    from echosonar import __version__

    ood = list(ood) if ood is not None else [None] * len(study.clips)
    clips, keyframes = [], {}
    for i, (clip, det) in enumerate(zip(study.clips, dets, strict=True)):
        t = int(clip.frames.shape[0])
        if det is None:
            ed, es = (clip.ed_index, clip.es_index) if min(clip.ed_index, clip.es_index) >= 0 \
                else (0, t // 2)
            estimated = min(clip.ed_index, clip.es_index) < 0
        else:
            ed, es, estimated = stages.keyframe_indices(clip, det)
        ed, es = min(max(ed, 0), t - 1), min(max(es, 0), t - 1)
        conf = float(clip.view_conf)
        clips.append({
            "index": i, "label": f"clip {i + 1}", "view": clip.view,
            "view_conf": min(1.0, max(0.0, conf)),
            "view_source": "classifier" if unknown[i] else "given", "n_frames": t,
            "cm_per_px": None if not np.isfinite(clip.cm_per_px) else float(clip.cm_per_px),
            "ed_index": ed, "es_index": es, "keyframes_estimated": bool(estimated),
            "structures": [] if det is None else stages.clip_structures(det, ed, es),
            "measurements": {} if det is None else {
                k: float(v) for k, v in stages.clip_measurements(det).items()},
            "ood": _clip_ood(ood[i]),
        })
        keyframes[i] = {"ed": clip.frames[ed], "es": clip.frames[es]}
    for c in clips:
        o = c["ood"]
        if o and o["level"] == "out":
            warnings.append(f"{c['label']} is not analysed: {o['reason']} (the view classifier "
                            f"said {o['classifier_view']}); labelled OTHER")
        elif o and o["level"] == "unusual" and c["view"] in VIEWS:
            warnings.append(f"{c['label']} ({c['view']}) is {o['reason']}: findings withheld")
    if any(o is not None and o.get("level") is None for o in ood):
        warnings.append("the view classifier has no OOD statistics, so no clip was checked "
                        "against the training data (fit them: echosonar train view-classifier "
                        "--ood-only)")
    low = [f"clip {c['index'] + 1} {c['view']} ({c['view_conf']:.2f})" for c in clips
           if c["view_source"] == "classifier" and c["view_conf"] < LOW_VIEW_CONF]
    if low:
        warnings.append(f"view predicted with low confidence (< {LOW_VIEW_CONF}) for "
                        f"{len(low)} clip(s): {', '.join(low)}; check these views")
    rank = {v: i for i, v in enumerate(VIEWS)}
    present = sorted({c["view"] for c in clips}, key=lambda v: rank.get(v, len(VIEWS)))
    missing = [v for v in VIEWS if v not in present]
    not_assessable = [f.key for f in LABELS if f.key != "healthy"
                      and not assessable(f.key, tuple(present))]
    if missing:
        warnings.append("missing views: " + ", ".join(missing) + (
            "; not assessable without them: " + ", ".join(FINDING_BY_KEY[k].name
                                                          for k in not_assessable)
            if not_assessable else ""))
    if "OTHER" in present:
        warnings.append("some clips are not a standard view (OTHER) and were not used by the "
                        "language model")
    guard = _ood_summary(clips, present)
    parsed = parse_generation(text)
    if text and not parsed.well_formed:
        warnings.append(f"the model output is malformed ({len(parsed.errors)} format "
                        "problem(s)); the report may be incomplete")
    findings = _findings(scores, bundle.spec.thresholds, parsed.findings, present)
    answer = [k for k in LABEL_KEYS if k in parsed.findings]
    sections = {s: parsed.sections.get(s, "") for s in REPORT_SECTIONS}
    if guard["withheld"]:
        # no confident findings on what the models were not trained for: calls, the stated
        # answer and the report text are withheld (the raw output stays in "generation")
        for f in findings:
            f["positive"], f["in_answer"] = None, False
        answer, sections = [], {s: "" for s in REPORT_SECTIONS}
        head = "FINDINGS WITHHELD" if any(v in VIEWS for v in present) else "NOT ASSESSABLE"
        warnings.insert(0, f"{head}: {guard['reason']}; no findings are reported")
    calls = {f["key"] for f in findings if f["positive"] and f["assessable"]}
    if "healthy" in calls and len(calls) > 1:
        warnings.append("the label scores call the study healthy and abnormal at once; "
                        "treat the findings table with care")
    reason_lines = {ln.split(":", 1)[0][5:]: ln.strip() for ln in parsed.reasoning.splitlines()
                    if ln.strip().startswith("view ")}
    result = {
        "schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "study_key": study.key,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "ok" if any(v in VIEWS for v in present) else "not_assessable",
        "model": {"bundle": bundle.spec.name, "bundle_version": 1,
                  "echosonar_version": __version__,
                  "components": {k: dict(v) for k, v in bundle.info.items()},
                  "thresholds": bundle.spec.thresholds_source},
        "clips": clips,
        "views": {"present": present, "missing": missing, "not_assessable": not_assessable},
        "ood": guard,
        "findings": findings,
        "answer_findings": answer,
        "reasoning": {"well_formed": parsed.well_formed, "errors": list(parsed.errors),
                      "views": [{"view": v.view, "acquired": v.acquired,
                                 "text": reason_lines.get(v.view, ""),
                                 "structures": {s: [float(x) for x in b]
                                                for s, b in v.structures.items()},
                                 "findings": list(v.findings),
                                 "not_assessable": list(v.not_assessable),
                                 "evidence": v.evidence} for v in parsed.views.values()]},
        "report": {"sections": [{"key": s, "title": REPORT_SECTION_TITLES[s],
                                 "text": sections[s]} for s in REPORT_SECTIONS]},
        "generation": text, "warnings": warnings, "timing_s": timing,
        "peak_memory_mb": None if peak_mb is None else round(float(peak_mb), 1),
    }
    return Analysis(result, keyframes)


def _clip_ood(o: dict[str, Any] | None) -> dict[str, Any] | None:
    if not o:
        return None
    num = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 4)  # noqa: E731
    return {"score": num(o.get("score")), "energy": num(o.get("energy")),
            "warn_at": num(o.get("warn_at")), "reject_at": num(o.get("reject_at")),
            "level": o.get("level"), "reason": o.get("reason"),
            "classifier_view": o.get("classifier_view")}


def _guide(cfg: Any, thresholds: dict[str, float]) -> dict[str, float] | None:
    """Thresholds that guide decoding (``app.decoding``), or None for free decoding."""
    mode = cfg.app.decoding
    if mode not in ("guided", "free"):
        raise AnalysisError(f"app.decoding must be 'guided' or 'free', not {mode!r}")
    return {k: float(thresholds.get(k, 0.5)) for k in LABEL_KEYS} if mode == "guided" else None


def _findings(scores: Sequence[float] | None, thresholds: dict[str, float],
              answered: set[str], present: list[str]) -> list[dict[str, Any]]:
    """One row per label: classifier score vs its threshold, and what the text answered."""
    if scores is not None and len(scores) != len(LABEL_KEYS):
        raise AnalysisError(f"label scores have {len(scores)} entries, expected "
                            f"{len(LABEL_KEYS)} (taxonomy.LABEL_KEYS)")
    rows = []
    for i, f in enumerate(LABELS):
        s = None if scores is None else float(scores[i])
        thr = float(thresholds.get(f.key, 0.5))
        rows.append({"key": f.key, "name": f.name, "section": f.section, "score": s,
                     "threshold": thr, "positive": None if s is None else bool(s >= thr),
                     "in_answer": f.key in answered,
                     "assessable": f.key == "healthy" or assessable(f.key, tuple(present))})
    return rows

