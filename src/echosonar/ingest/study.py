"""Study assembly: files -> de-identified studies, in parallel, with a list of what was skipped.

* :func:`ingest_paths` — DICOM/video files or folders. DICOMs are grouped by (hashed)
  StudyInstanceUID; videos and DICOMs without one by their folder. Clips inside a study are ordered
  by series number, instance number, then file name. A file repeating a SOPInstanceUID or the exact
  decoded pixels of a file already taken is skipped as a duplicate.
* :func:`ingest_manifest` — a simulated set (``manifest.json``): views, spacing, sector, boxes,
  ED/ES frames, labels, measurements, reasoning, report and split come from the manifest
  (``hints=True``, the *oracle* protocol training uses). With ``hints=False`` (the
  *end-to-end* protocol evaluation uses) the manifest gives only the scoring truth (labels,
  measurements, reasoning, report, split): every clip is read as a user's file would be, its
  view left to the view classifier, its sector and cardiac phases to the images.

Both return :class:`~echosonar.schema.Study` objects whose ``key`` is a salted hash; clips whose
view is unknown are labelled by the view classifier when one is given.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echosonar.ingest.errors import IngestError
from echosonar.ingest.preproc import preprocess
from echosonar.ingest.raw import as_ingest_config, read_file, salted_hash, source_label
from echosonar.schema import Clip, Study
from echosonar.taxonomy import OTHER_VIEW

log = logging.getLogger("echosonar.ingest")
Skipped = tuple[str, str]  # (file label — see source_label — or basename, reason)


@dataclass
class _Result:
    """What a worker sends back for one file: a clip plus hashed grouping keys, or an error."""

    index: int
    file: str
    clip: Clip | None = None
    group: str = ""
    instance_key: str | None = None
    pixel_hash: str = ""
    order: tuple[Any, ...] = ()
    warnings: list[str] = field(default_factory=list)
    error: str = ""


def _work(task: tuple[Any, ...]) -> _Result:
    """``task = (index, path, icfg, manifest extra or None[, position in the input list])``.

    The file is named in everything this returns by :func:`~echosonar.ingest.raw.source_label`
    (position + salted hash of its path), or by its basename with ``keep_source_names``."""
    index, path, icfg, extra, *rest = task
    if icfg.keep_source_names:
        name = os.path.basename(path)
    else:
        name = source_label(path, icfg.salt, rest[0] if rest else None)
    try:
        raw = read_file(path, icfg)
        raw.source = name
        if extra:
            _attach_manifest(raw, extra)
        clip = preprocess(raw, icfg)
    except IngestError as e:
        return _Result(index, name, error=e.reason)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop a whole run
        log.warning("%s: internal error %s while ingesting", name, type(e).__name__)
        return _Result(index, name, error=f"internal error ({type(e).__name__}); please report")
    group = raw.study_key or salted_hash("folder:" + str(Path(path).resolve().parent), icfg.salt)
    return _Result(index, name, clip, group, raw.instance_key, raw.pixel_hash, raw.order,
                   [f"{name}: {w}" for w in raw.warnings])


def _attach_manifest(raw: Any, extra: dict[str, Any]) -> None:
    """Ground truth of a simulated clip: view, sector, boxes, ED/ES, spacing fallback."""
    raw.view = extra["view"]
    raw.sector = extra.get("sector") or None
    raw.boxes = extra.get("boxes") or None
    raw.ed_frames, raw.es_frames = list(extra.get("ed_frames", [])), list(extra.get("es_frames", []))
    cm = extra.get("cm_per_px")
    if cm and raw.spacing is None:
        raw.spacing = (float(cm), float(cm))
    elif cm and raw.spacing and abs(raw.spacing[0] - cm) > 0.02 * cm:
        raw.warnings.append("header spacing differs from the manifest by more than 2%")


def _run(tasks: list[tuple[int, str, Any, dict | None]], workers: int, desc: str,
         show: bool) -> Iterator[_Result]:
    from echosonar.utils.progress import progress

    if workers <= 1 or len(tasks) <= 1:
        yield from progress(map(_work, tasks), desc=desc, total=len(tasks), force=show)
        return
    # fork starts workers in milliseconds; they never touch torch (numpy/Pillow/pydicom only),
    # so a torch thread pool in this process is harmless. Elsewhere: the platform default.
    method = "fork" if sys.platform.startswith("linux") else None
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as ex:
        chunk = max(1, min(8, len(tasks) // (4 * workers)))
        yield from progress(ex.map(_work, tasks, chunksize=chunk), desc=desc, total=len(tasks),
                            force=show)


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files under the given files/folders, recursively, sorted, hidden files left out."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and
                          not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)
    return out


def ingest_paths(paths: str | os.PathLike | Iterable[str | os.PathLike], cfg: Any | None = None,
                 workers: int | None = None, view_model: Any | None = None,
                 progress: bool = False) -> tuple[list[Study], list[Skipped]]:
    """Ingest DICOM/video files or folders. Returns ``(studies, skipped)``.

    ``skipped`` lists ``(label, reason)`` for every file not ingested (bad input, duplicates);
    ``label`` (also each clip's ``source`` and the prefix of file warnings) is
    ``"file #<position> [<salted hash>]"``, position in the sorted expanded file list, or the
    basename when ``ingest.keep_source_names`` is set.
    ``view_model``: a :class:`~echosonar.ingest.view_model.ViewClassifier` or checkpoint folder;
    defaults to ``cfg.ingest.view_model`` when set. Without one, clips of unknown view stay
    ``OTHER`` with ``view_conf = 0`` and the study gets a warning.
    """
    icfg = as_ingest_config(cfg)
    files = expand_paths(paths)
    tasks = [(i, str(f), icfg, None, i) for i, f in enumerate(files)]
    results = sorted(_run(tasks, workers or icfg.workers, "ingest", progress),
                     key=lambda r: r.index)
    skipped: list[Skipped] = []
    seen_inst: dict[str, str] = {}
    seen_pix: dict[str, str] = {}
    groups: dict[str, list[_Result]] = {}
    for r in results:
        if r.error:
            skipped.append((r.file, r.error))
            continue
        dup = (seen_inst.get(r.instance_key) if r.instance_key else None) or seen_pix.get(
            r.pixel_hash)
        if dup:
            skipped.append((r.file, f"duplicate of {dup} (same SOP instance or identical pixels)"))
            continue
        if r.instance_key:
            seen_inst[r.instance_key] = r.file
        seen_pix[r.pixel_hash] = r.file
        groups.setdefault(r.group, []).append(r)
    studies = []
    for key, rs in groups.items():
        rs.sort(key=lambda r: r.order)
        studies.append(Study(key=key, clips=[r.clip for r in rs],
                             warnings=[w for r in rs for w in r.warnings]))
    if view_model is not False:  # False: the caller labels views itself
        label_views(studies, view_model if view_model is not None else icfg.view_model or None,
                    icfg.view_min_conf)
    for f, reason in skipped:
        log.info("skipped %s: %s", f, reason)
    return studies, skipped


def ingest_manifest(root: str | os.PathLike, cfg: Any | None = None, workers: int | None = None,
                    skipped: list[Skipped] | None = None, progress: bool = False,
                    splits: Iterable[str] | None = None, hints: bool = True) -> list[Study]:
    """Ingest a simulated study set from its ``manifest.json``.

    Labels, measurements, reasoning, report and split come from the manifest; with ``hints``
    (the oracle protocol) so do views, sector, ground-truth boxes and ED/ES frames, otherwise
    (end-to-end) every clip is ingested blind: ``view_conf == 0`` until a view classifier
    labels it, sector estimated from the pixels, ED/ES left to the detector. The study key is
    the salted hash of the manifest key. A clip that fails is left out of its study (reason
    appended to ``skipped`` when a list is given, and to the study's warnings).
    """
    return list(iter_manifest(root, cfg, workers, skipped, progress, splits, hints=hints))


def iter_manifest(root: str | os.PathLike, cfg: Any | None = None, workers: int | None = None,
                  skipped: list[Skipped] | None = None, progress: bool = False,
                  splits: Iterable[str] | None = None, skip_keys: Iterable[str] = (),
                  chunk: int = 64, hints: bool = True) -> Iterator[Study]:
    """Like :func:`ingest_manifest`, but yields studies ``chunk`` at a time (bounded memory).

    ``skip_keys``: (hashed) study keys to leave out, e.g. those already in a cache (resume).
    """
    from echosonar.io.manifest import manifest_path, read_manifest

    icfg = as_ingest_config(cfg)
    _, records = read_manifest(root)
    base = manifest_path(root).parent
    keep, done = (set(splits) if splits is not None else None), set(skip_keys)
    records = [r for r in records if (keep is None or r.split in keep)
               and salted_hash(r.key, icfg.salt) not in done]
    for lo in range(0, len(records), chunk):
        yield from _manifest_chunk(records[lo:lo + chunk], base, icfg, workers, skipped,
                                   progress, f"ingest {lo + 1}-{min(lo + chunk, len(records))}"
                                   f"/{len(records)}", hints)


def _manifest_chunk(records: list[Any], base: Path, icfg: Any, workers: int | None,
                    skipped: list[Skipped] | None, progress: bool, desc: str,
                    hints: bool = True) -> list[Study]:
    tasks, owner = [], []
    for si, rec in enumerate(records):
        for c in rec.clips:
            rel = c.video_path if icfg.prefer_video and c.video_path else c.path
            # end-to-end: nothing the inference path would not have (the header's spacing is
            # read from the file itself, as for a user's DICOM)
            extra = None if not hints else {
                "view": c.view, "sector": c.sector, "boxes": c.boxes, "cm_per_px": c.cm_per_px,
                "ed_frames": c.ed_frames, "es_frames": c.es_frames}
            tasks.append((len(tasks), str(base / rel), icfg, extra))
            owner.append(si)
    results = sorted(_run(tasks, workers or icfg.workers, desc, progress), key=lambda r: r.index)
    clips: list[list[Clip]] = [[] for _ in records]
    warns: list[list[str]] = [[] for _ in records]
    for r, si in zip(results, owner, strict=True):
        if r.error:
            warns[si].append(f"{r.file}: skipped: {r.error}")
            if skipped is not None:
                skipped.append((r.file, r.error))
        else:
            clips[si].append(r.clip)
            warns[si] += r.warnings
    return [Study(key=salted_hash(rec.key, icfg.salt), clips=clips[si], labels=dict(rec.labels),
                  measurements=dict(rec.measurements), reasoning=rec.reasoning,
                  report=dict(rec.report), split=rec.split, warnings=warns[si])
            for si, rec in enumerate(records)]


def label_views(studies: list[Study], view_model: Any | None, min_conf: float = 0.0,
                on_decision: Callable[[Study, Clip], None] | None = None) -> None:
    """Run the view classifier on clips whose view is unknown (``view_conf == 0``), in place."""
    unknown = [(s, c) for s in studies for c in s.clips if c.view_conf == 0.0]
    if not unknown:
        return
    if not view_model:
        for s in {id(s): s for s, _ in unknown}.values():
            s.warnings.append("view unknown for some clips and no view model given; left as "
                              f"{OTHER_VIEW}")
        return
    from echosonar.ingest.view_model import ViewClassifier, predict_views

    model = view_model if isinstance(view_model, ViewClassifier) else \
        ViewClassifier.from_pretrained(view_model)
    preds = predict_views(model, [c for _, c in unknown])
    for (s, c), (view, conf) in zip(unknown, preds, strict=True):
        c.view, c.view_conf = (view if conf >= min_conf else OTHER_VIEW), max(conf, 1e-6)
        if on_decision is not None:
            on_decision(s, c)


def summarize(studies: list[Study], skipped: list[Skipped]) -> dict[str, Any]:
    """PHI-free summary: counts, views, skipped files with reasons."""
    n_clips = sum(len(s.clips) for s in studies)
    views: dict[str, int] = {}
    for s in studies:
        for c in s.clips:
            views[c.view] = views.get(c.view, 0) + 1
    spacing = sum(1 for s in studies for c in s.clips if not math.isnan(c.cm_per_px))
    return {"studies": len(studies), "clips": n_clips, "views": views,
            "clips_with_spacing": spacing, "skipped": [list(x) for x in skipped],
            "warnings": sum(len(s.warnings) for s in studies)}
