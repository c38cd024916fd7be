"""``analyze_study``: files of one study -> result dict (``result.json``) + keyframes.

The app owns no model logic: every step is a call into a stage through the thin adapters of
:mod:`echosonar.app.stages` (tests pass a fake ``stages`` object with the same functions)::

    ingest (decode + preprocess) -> view classification of unknown views -> per clip: detect
    -> encode -> StudyFeatures -> greedy generation + label scores -> strict parse

What the app adds is bookkeeping: thresholds from the bundle, "missing view" and "skipped file"
warnings, keyframe choice, stage timings, peak memory, and a result that validates against
:data:`echosonar.app.result.RESULT_SCHEMA`. Inputs are named in warnings by their position in the
input list, never by file name (names often carry patient identifiers).
"""

from __future__ import annotations

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
        report("detect", STAGE_PLAN[2][1])
        sf, dets = stages.features(bundle, study, cfg, timer)
        report("generate", STAGE_PLAN[3][1])
        with timer("generate"):
            text = stages.generate(bundle.vlm, sf, bundle.spec.max_new_tokens,
                                   _guide(cfg, bundle.spec.thresholds))
            scores = stages.label_scores(bundle.vlm, sf)
        report("report", STAGE_PLAN[4][1])
    timing = {k: round(timer.seconds.get(k, 0.0), 4) for k in TIMING_KEYS if k != "total"}
    timing["total"] = round(time.perf_counter() - t_start, 4)
    analysis = build_result(study, unknown, dets, text, scores, bundle, warnings, timing,
                            mem.peak_mb(), stages)
    assert_valid(analysis.result)
    report("done", 1.0)
    return analysis


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
                 stages: Any) -> Analysis:
    """Assemble the result dict from the stages' outputs (pure bookkeeping, no model calls)."""
    from echosonar import __version__

    clips, keyframes = [], {}
    for i, (clip, det) in enumerate(zip(study.clips, dets, strict=True)):
        t = int(clip.frames.shape[0])
        ed, es, estimated = stages.keyframe_indices(clip, det)
        ed, es = min(max(ed, 0), t - 1), min(max(es, 0), t - 1)
        conf = float(clip.view_conf)
        clips.append({
            "index": i, "label": f"clip {i + 1}", "view": clip.view,
            "view_conf": min(1.0, max(0.0, conf)),
            "view_source": "classifier" if unknown[i] else "given", "n_frames": t,
            "cm_per_px": None if not np.isfinite(clip.cm_per_px) else float(clip.cm_per_px),
            "ed_index": ed, "es_index": es, "keyframes_estimated": bool(estimated),
            "structures": stages.clip_structures(det, ed, es),
            "measurements": {k: float(v) for k, v in stages.clip_measurements(det).items()},
        })
        keyframes[i] = {"ed": clip.frames[ed], "es": clip.frames[es]}
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
    parsed = parse_generation(text)
    if not parsed.well_formed:
        warnings.append(f"the model output is malformed ({len(parsed.errors)} format "
                        "problem(s)); the report may be incomplete")
    findings = _findings(scores, bundle.spec.thresholds, parsed.findings, present)
    calls = {f["key"] for f in findings if f["positive"] and f["assessable"]}
    if "healthy" in calls and len(calls) > 1:
        warnings.append("the label scores call the study healthy and abnormal at once; "
                        "treat the findings table with care")
    reason_lines = {ln.split(":", 1)[0][5:]: ln.strip() for ln in parsed.reasoning.splitlines()
                    if ln.strip().startswith("view ")}
    result = {
        "schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "study_key": study.key,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "status": "ok",
        "model": {"bundle": bundle.spec.name, "bundle_version": 1,
                  "echosonar_version": __version__,
                  "components": {k: dict(v) for k, v in bundle.info.items()},
                  "thresholds": bundle.spec.thresholds_source},
        "clips": clips,
        "views": {"present": present, "missing": missing, "not_assessable": not_assessable},
        "findings": findings,
        "answer_findings": [k for k in LABEL_KEYS if k in parsed.findings],
        "reasoning": {"well_formed": parsed.well_formed, "errors": list(parsed.errors),
                      "views": [{"view": v.view, "acquired": v.acquired,
                                 "text": reason_lines.get(v.view, ""),
                                 "structures": {s: [float(x) for x in b]
                                                for s, b in v.structures.items()},
                                 "findings": list(v.findings),
                                 "not_assessable": list(v.not_assessable),
                                 "evidence": v.evidence} for v in parsed.views.values()]},
        "report": {"sections": [{"key": s, "title": REPORT_SECTION_TITLES[s],
                                 "text": parsed.sections.get(s, "")} for s in REPORT_SECTIONS]},
        "generation": text, "warnings": warnings, "timing_s": timing,
        "peak_memory_mb": None if peak_mb is None else round(float(peak_mb), 1),
    }
    return Analysis(result, keyframes)


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

