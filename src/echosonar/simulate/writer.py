"""Write study sets: DICOM (+ MP4) per clip, ``study.json`` per study, ``manifest.json``.

Layout of ``OUT/``::

    manifest.json                 io.manifest format (schema.StudyRecord per study)
    simset.json                   resolved SimConfig the set was written with (resume check)
    studies/<key>/clipNN.dcm      one multi-frame DICOM per clip (+ clipNN.mp4 if write_mp4);
                                  NN in a random per-study order: names do not reveal views
    studies/<key>/study.json      the study's StudyRecord (paths relative to OUT/)

Each study is rendered into a temporary folder that is renamed into place only when complete,
so an interrupted run never leaves a half-written study; re-running skips complete studies and
rebuilds the manifest. Study ``i`` depends only on (seed, i), never on worker count or order.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.config.base import to_dict
from echosonar.config.sim import SimConfig
from echosonar.io.atomic import atomic_dir, atomic_write_json
from echosonar.io.manifest import write_manifest
from echosonar.schema import ClipRecord, StudyRecord
from echosonar.simulate.dicom import uid_for, write_dicom, write_mp4
from echosonar.simulate.presets import SimConfigError, resolve
from echosonar.simulate.render import render_clip
from echosonar.simulate.spec import StudySpec, spec_for_index, study_rng
from echosonar.simulate.text import reasoning_text, report_sections
from echosonar.taxonomy import VIEWS

SIMSET = "simset.json"
STUDY_JSON = "study.json"
GENERATOR_VERSION = 2
# Fields that do not change a study's content (safe to differ on resume).
_RESUME_FREE = ("studies", "workers")


def render_study(spec: StudySpec, cfg: SimConfig) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """Render every acquired view: ``[(view, frames, meta), ...]`` in ``taxonomy.VIEWS`` order."""
    return [(v, *render_clip(spec, v, cfg, study_rng(cfg.seed, spec.index, 1 + VIEWS.index(v))))
            for v in spec.views]


def boxes01_for_reasoning(meta: dict[str, Any]) -> dict[str, list[float]]:
    """ED boxes normalised to the ultrasound region (sector bbox); jets, absent at ED, at the
    frame where they are largest."""
    x0, y0, x1, y1 = meta["sector"]["bbox"]
    sx, sy = max(x1 - x0, 1), max(y1 - y0, 1)

    def norm(b: list[float]) -> list[float]:
        return [float(np.clip((b[0] - x0) / sx, 0, 1)), float(np.clip((b[1] - y0) / sy, 0, 1)),
                float(np.clip((b[2] - x0) / sx, 0, 1)), float(np.clip((b[3] - y0) / sy, 0, 1))]

    ed = meta["boxes"][meta["ed_frames"][0]]
    out = {s: norm(b) for s, b in ed.items()}
    for s in ("MR_JET", "TR_JET", "AR_JET"):
        if s in out:
            continue
        frames = [(((b := fb[s])[2] - b[0]) * (b[3] - b[1]), t)
                  for t, fb in enumerate(meta["boxes"]) if s in fb]
        if frames:
            out[s] = norm(meta["boxes"][max(frames)[1]][s])
    return out


def clip_names(spec: StudySpec, n: int) -> list[str]:
    """File stems of a study's clips: ``clip01..clipNN`` in a per-study random order, so that
    neither file names nor series numbers reveal the view (the manifest has it)."""
    perm = study_rng(spec.seed, spec.index, 200).permutation(n)
    return [f"clip{int(k) + 1:02d}" for k in perm]


def build_record(spec: StudySpec, cfg: SimConfig,
                 clips: list[tuple[str, np.ndarray, dict[str, Any]]]) -> StudyRecord:
    """The StudyRecord (targets included) for rendered ``clips``; paths follow the layout."""
    records, boxes01 = [], {}
    names = clip_names(spec, len(clips))
    for (view, frames, meta), name in zip(clips, names, strict=True):
        base = f"studies/{spec.key}/{name}"
        records.append(ClipRecord(
            view=view, path=base + ".dcm", n_frames=int(frames.shape[0]), fps=meta["fps"],
            ed_frames=meta["ed_frames"], es_frames=meta["es_frames"],
            cm_per_px=meta["cm_per_px"], boxes=meta["boxes"],
            video_path=base + ".mp4" if cfg.write_mp4 else None, sector=meta["sector"]))
        boxes01[view] = boxes01_for_reasoning(meta)
    trng = study_rng(cfg.seed, spec.index, 100)
    m = spec.measurements
    return StudyRecord(key=spec.key, split=spec.split, labels=dict(spec.labels),
                       measurements=dict(m), clips=records,
                       reasoning=reasoning_text(m, spec.labels, boxes01, trng),
                       report=report_sections(m, spec.labels, trng, spec.views))


def write_study(out_dir: str | Path, cfg: SimConfig, index: int) -> tuple[StudyRecord, int]:
    """Write study ``index`` (skip if complete). Returns ``(record, frames rendered)``."""
    out_dir = Path(out_dir)
    spec = spec_for_index(cfg, index)
    final = out_dir / "studies" / spec.key
    done = final / STUDY_JSON
    if done.is_file():
        return StudyRecord.from_dict(json.loads(done.read_text())), 0
    clips = render_study(spec, cfg)
    rec = build_record(spec, cfg, clips)
    study_uid = uid_for(cfg.seed, cfg.preset, index, "study")
    with atomic_dir(final) as tmp:
        for (view, frames, meta), name in zip(clips, clip_names(spec, len(clips)), strict=True):
            write_dicom(tmp / f"{name}.dcm", frames, meta, study_uid=study_uid,
                        series_uid=uid_for(cfg.seed, cfg.preset, index, view, "series"),
                        sop_uid=uid_for(cfg.seed, cfg.preset, index, view, "sop"),
                        patient_no=index, view=view, series_number=int(name[4:]))
            if cfg.write_mp4:
                write_mp4(tmp / f"{name}.mp4", frames, meta["fps"])
        atomic_write_json(tmp / STUDY_JSON, rec.to_dict(), indent=None)
    return rec, sum(int(c[1].shape[0]) for c in clips)


def _check_simset(out_dir: Path, cfg: SimConfig) -> None:
    path = out_dir / SIMSET
    want = {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE}
    want["generator_version"] = GENERATOR_VERSION
    if path.is_file():
        try:
            have = json.loads(path.read_text())
        except json.JSONDecodeError:
            have = None
        if have != want:
            diff = sorted(k for k in set(want) | set(have or {})
                          if (have or {}).get(k) != want.get(k))
            raise SimConfigError(
                f"{out_dir} already holds a study set written with different settings "
                f"(differs in: {', '.join(diff) or 'unreadable ' + SIMSET}); use another --out "
                f"or --overwrite")
    else:
        atomic_write_json(path, want)


def _work(args: tuple[str, dict[str, Any], int]) -> tuple[dict[str, Any], int]:
    from echosonar.config.base import from_dict

    out_dir, cfg_d, index = args
    rec, n = write_study(out_dir, from_dict(SimConfig, cfg_d), index)
    return rec.to_dict(), n


def write_study_set(out_dir: str | Path, cfg: SimConfig, overwrite: bool = False,
                    log: Any = None) -> Path:
    """Write ``cfg.studies`` studies into ``out_dir`` and return the manifest path.

    Resumable: complete studies are kept, missing ones rendered. ``overwrite`` deletes an
    existing set first. ``log`` (callable taking a string) receives a one-line summary.
    """
    cfg = resolve(cfg)
    out_dir = Path(out_dir)
    if overwrite and out_dir.exists():
        for p in (out_dir / "studies", out_dir / SIMSET, out_dir / "manifest.json"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_simset(out_dir, cfg)
    studies_dir = out_dir / "studies"
    studies_dir.mkdir(exist_ok=True)
    for stale in studies_dir.glob(".*.tmp"):      # leftovers of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    jobs = [(str(out_dir), to_dict(cfg), i) for i in range(cfg.studies)]
    results: list[tuple[dict[str, Any], int]] = []
    from echosonar.utils.progress import progress

    if cfg.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(cfg.workers) as pool:
            results = list(progress(pool.imap(_work, jobs, chunksize=1), desc="simulate",
                                    total=len(jobs)))
    else:
        results = [_work(j) for j in progress(jobs, desc="simulate", total=len(jobs))]
    records = [StudyRecord.from_dict(d) for d, _ in results]
    frames = sum(n for _, n in results)
    dt = time.perf_counter() - t0
    path = write_manifest(out_dir, records, preset=cfg.preset, seed=cfg.seed,
                          generator="echosim", generator_version=GENERATOR_VERSION,
                          sim=to_dict(cfg))
    if log is not None:
        skipped = sum(1 for _, n in results if n == 0)
        log(f"wrote {len(records) - skipped} studies ({frames} frames, "
            f"{frames / max(dt, 1e-9):.0f} frames/s), kept {skipped} existing; manifest {path}")
    return path
