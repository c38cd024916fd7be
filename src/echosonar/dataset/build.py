"""``build_dataset``: a user's study folders + labels file -> a clip cache every trainer reads.

The dataset *is* an ingest clip cache (``echosonar.ingest.cache``; protocol ``end-to-end``: no
simulator hint reaches a clip) whose studies carry labels, measurements, the report target and
the split, plus ``dataset.json`` (counts, where views and reports came from, every problem). So
``train detector/encoder``, ``encode``, ``train baselines/sft/grpo`` and ``evaluate`` read it as
they read a simulated set's cache. What it does not carry, a user's files cannot give:

* **boxes** — no ground-truth boxes: the detector is used as trained (``--detector``);
* **ED/ES frames** — left to the detector's phase estimate, as in ``analyze``;
* **reasoning** — written after ``encode`` from each study's own detector evidence and its
  labels (``echosonar dataset targets`` -> :mod:`echosonar.reason.evidence_targets`).

Identifiers never leave this module: each study identifier becomes ``salted_hash(id,
ingest.salt)`` on reading, files are named by position + salted hash (ingest's rule), and
problems by position (``labels row 7``, ``study folder #3 [key]``). The identifier -> key table
is written only when asked (``key_map``), and never inside the dataset folder.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echosonar.dataset.labels import LabelRow, read_labels
from echosonar.dataset.problems import Problems
from echosonar.dataset.reports import read_reports, report_target
from echosonar.dataset.study_views import assign_views
from echosonar.schema import Study

FORMAT = "echosonar-dataset"
SUMMARY = "dataset.json"
PROTOCOL = "end-to-end"


@dataclass
class BuildInputs:
    """What ``dataset build`` reads (paths as the user gave them)."""

    inputs: list[Path]
    labels: Path
    out: Path
    reports: Path | None = None
    views: Path | None = None
    view_model: Any = None  # checkpoint folder or ViewClassifier; None = header/file views only
    key_map: Path | None = None
    workers: int | None = None
    progress: bool = False


def split_of(key: str, fractions: list[float] | tuple[float, ...]) -> str:
    """Deterministic split of a salted key: a pure function of the key and the fractions.

    >>> split_of("abc", [1, 0, 0]), split_of("abc", [0, 0, 1])
    ('train', 'test')
    """
    f = [max(0.0, float(x)) for x in fractions]
    if len(f) != 3 or sum(f) <= 0:
        raise ValueError("dataset.split_fractions must be three non-negative numbers, not all 0")
    u = int(hashlib.sha256(f"split\x00{key}".encode()).hexdigest()[:12], 16) / 16**12
    c0, c1 = f[0] / sum(f), (f[0] + f[1]) / sum(f)
    return "train" if u < c0 else "val" if u < c1 else "test"


@dataclass
class _Found:
    """One study on disk: its identifier (never written), salted key and files."""

    sid: str
    key: str
    where: str
    folder: Path | None
    files: list[Path]
    roots: dict[Path, Path]  # file -> the folder its views-file path is relative to


def _discover(inp: BuildInputs, cfg: Any, problems: Problems) -> list[_Found]:
    """Studies on disk: one per sub-folder (``id_from=folder``) or per StudyInstanceUID."""
    from echosonar.ingest.raw import salted_hash
    from echosonar.ingest.study import expand_paths

    salt = cfg.ingest.salt
    found: list[_Found] = []
    if cfg.dataset.id_from == "uid":
        files = expand_paths(inp.inputs)
        roots = {}
        for root in inp.inputs:
            for f in expand_paths([root]):
                roots[f] = root if root.is_dir() else root.parent
        return [_Found("", "", "all input files", None, files, roots)]
    seen: dict[str, int] = {}
    loose = 0
    for root in inp.inputs:
        if not root.is_dir():
            problems.error("inputs", "an input is not a folder (with id_from=folder each "
                           "sub-folder of an input folder is one study)")
            continue
        for child in sorted(root.iterdir()):
            if child.name.startswith("."):
                continue
            if not child.is_dir():
                loose += 1
                continue
            key = salted_hash(child.name, salt)
            where = f"study folder #{len(found) + 1} [{key[:10]}]"
            if child.name in seen:
                problems.error(where, f"same identifier as {found[seen[child.name]].where} "
                               "(another input folder); both are left out")
                found[seen[child.name]].sid = ""
                continue
            seen[child.name] = len(found)
            files = expand_paths([child])
            found.append(_Found(child.name, key, where, child, files,
                                {f: child for f in files}))
    if loose:
        problems.warning("inputs", f"{loose} file(s) directly in an input folder, outside any "
                         "study folder, were ignored")
    return [f for f in found if f.sid]


def _finish(study: Study, found: _Found, row: LabelRow, report: Any, cfg: Any,
            views_given: dict[Path, str], model: Any, problems: Problems,
            counts: Counter) -> Study | None:
    """Views, OTHER kept out, labels, report target and split; None (with a problem) when no
    clip of a known view is left."""
    from echosonar.taxonomy import OTHER_VIEW

    n_in = len(study.clips)
    assign_views(study, found.files, views_given, model, cfg, found.where, problems, counts)
    other = [c for c in study.clips if c.view == OTHER_VIEW]
    study.clips = [c for c in study.clips if c.view != OTHER_VIEW]
    counts["other_clips_kept_out"] += len(other)
    if not study.clips:
        problems.error(found.where, f"no clip of a known view ({n_in} clip(s) read, "
                       f"{len(other)} OTHER); the study is left out")
        return None
    study.labels = dict(row.labels)
    study.measurements = dict(row.measurements)
    study.report, filled, unknown = report_target(report, row.labels, row.measurements)
    if unknown:
        problems.warning(found.where, "report keys ignored (not a section): "
                         + ", ".join(repr(k)[:30] for k in unknown))
    counts["reports_from_user" if report is not None else "reports_from_labels"] += 1
    if report is not None and filled:
        counts["report_sections_from_labels"] += len(filled)
    study.reasoning = None  # written from the detector's evidence after encode
    study.split = row.split or split_of(study.key, cfg.dataset.split_fractions)
    counts["split_from_labels" if row.split else "split_from_key"] += 1
    return study


def _check_out(inp: BuildInputs) -> None:
    if inp.key_map is not None:
        km, out = inp.key_map.resolve(), inp.out.resolve()
        if km == out or out in km.parents:
            raise ValueError("--key-map must be written outside the dataset folder (it links "
                             "keys back to your identifiers; keep it beside your data)")


def _load_model(view_model: Any) -> Any:
    if view_model is None or view_model == "":
        return None
    from echosonar.ingest.view_model import ViewClassifier

    if isinstance(view_model, ViewClassifier):
        return view_model
    return ViewClassifier.from_pretrained(view_model)


def _ingested(inp: BuildInputs, found: list[_Found], rows: dict[str, LabelRow], cfg: Any,
              problems: Problems, counts: Counter):  # noqa: ANN202 - a generator of tuples
    """Yield ``(found, study)`` for every study on disk that has a labels row, ingested; studies
    without a labels row are problems and are not read at all (folder mode)."""
    from echosonar.ingest.raw import salted_hash
    from echosonar.ingest.study import ingest_paths
    from echosonar.utils.progress import progress

    if cfg.dataset.id_from == "uid":
        studies, skipped = ingest_paths(inp.inputs, cfg, inp.workers, view_model=False,
                                        progress=inp.progress)
        for label, reason in skipped:
            problems.warning("inputs", f"{label}: skipped: {reason}")
        counts["files_skipped"] += len(skipped)
        whole = found[0]
        for n, st in enumerate(studies):
            f = _Found("", st.key, f"study #{n + 1} [{st.key[:10]}]", None, whole.files,
                       whole.roots)
            yield f, st
        return
    keys = {salted_hash(sid, cfg.ingest.salt) for sid in rows}
    for f in progress(found, desc="dataset build", total=len(found), force=inp.progress):
        if f.key not in keys:
            yield f, None
            continue
        studies, skipped = ingest_paths([f.folder], cfg, inp.workers, view_model=False)
        for label, reason in skipped:
            problems.warning(f.where, f"{label}: skipped: {reason}")
        counts["files_skipped"] += len(skipped)
        if len(studies) > 1:
            problems.warning(f.where, f"holds clips of {len(studies)} DICOM studies "
                             "(StudyInstanceUIDs); merged into one study")
        yield f, Study(key=f.key, clips=[c for s in studies for c in s.clips],
                       warnings=[w for s in studies for w in s.warnings])


def build_dataset(inp: BuildInputs, cfg: Any) -> dict[str, Any]:
    """Build the dataset at ``inp.out``; returns the summary written to ``dataset.json``.

    Never raises for a problem in the user's files (see :mod:`echosonar.dataset.problems`);
    raises ``ValueError`` for unusable settings (``--key-map`` inside the dataset, bad split
    fractions, an unreadable view classifier)."""
    from echosonar.dataset.views import match_views, read_views_file
    from echosonar.ingest.cache import CacheWriter
    from echosonar.ingest.raw import as_ingest_config, salted_hash
    from echosonar.io.atomic import atomic_write_json, atomic_write_text, remove_stale_temps

    as_ingest_config(cfg)
    _check_out(inp)
    if cfg.dataset.id_from not in ("folder", "uid"):
        raise ValueError("dataset.id_from must be 'folder' or 'uid'")
    split_of("check", cfg.dataset.split_fractions)
    model = _load_model(inp.view_model)
    problems, counts = Problems(), Counter()
    salt = cfg.ingest.salt
    rows, _ = read_labels(inp.labels, cfg.dataset.id_column, cfg.dataset.list_separator,
                          problems)
    by_key = {salted_hash(sid, salt): r for sid, r in rows.items()}
    reports = {salted_hash(sid, salt): wr for sid, wr in
               read_reports(inp.reports, cfg.dataset.id_column, problems).items()}
    views_rows = {salted_hash(sid, salt): v for sid, v in
                  (read_views_file(inp.views, cfg.dataset.id_column, problems)
                   if inp.views else {}).items()}
    found = _discover(inp, cfg, problems)
    inp.out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(inp.out)
    seen: set[str] = set()
    kept: list[str] = []
    splits: Counter = Counter()
    with CacheWriter(inp.out, cfg.ingest.cache_dtype, protocol=PROTOCOL) as writer:
        for f, study in _ingested(inp, found, rows, cfg, problems, counts):
            seen.add(f.key)
            row = by_key.get(f.key)
            if study is None or row is None:
                problems.error(f.where, "no labels row for this study; left out")
                continue
            rel = {p: p.relative_to(f.roots[p]).as_posix() for p in _files_of(study, f, cfg)}
            given = match_views(views_rows.get(f.key, {}), rel, problems)
            report = reports.get(f.key, (None, None))[1]
            report = report if report is not None else row.report
            done = _finish(study, f, row, report, cfg, given, model, problems, counts)
            if done is None:
                continue
            writer.add(done, overwrite=True)
            kept.append(done.key)
            splits[done.split] += 1
        for k in [k for k in writer.entries if k not in kept]:  # an earlier build's studies
            (inp.out / writer.entries.pop(k)["file"]).unlink(missing_ok=True)
        writer.reorder(kept)
    for key, r in by_key.items():
        if key not in seen:
            problems.error(f"labels row {r.row}", "no study with this identifier in the inputs")
    for key, (where, _) in reports.items():
        if key not in by_key:
            problems.error(where, "a report for an identifier with no labels row; ignored")
    for key, v in views_rows.items():
        if key not in seen:
            for _, where in v.values():
                problems.error(where, "no study with this identifier in the inputs")
    if inp.key_map is not None and rows:
        lines = ["study_id,key"] + [f"{_csv(sid)},{salted_hash(sid, salt)}" for sid in rows]
        atomic_write_text(inp.key_map, "\n".join(lines) + "\n")
    summary = _summary(inp, cfg, found, rows, kept, splits, counts, problems, model)
    atomic_write_json(inp.out / SUMMARY, summary)
    return summary


def _files_of(study: Study, f: _Found, cfg: Any) -> list[Path]:
    """The input files a study's clips came from (all of the folder's files in folder mode)."""
    if f.folder is not None:
        return f.files
    from echosonar.dataset.study_views import source_map

    src = source_map(f.files, cfg)
    return [src[c.source] for c in study.clips if c.source in src]


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def _summary(inp: BuildInputs, cfg: Any, found: list[_Found], rows: dict, kept: list[str],
             splits: Counter, counts: Counter, problems: Problems,
             model: Any) -> dict[str, Any]:
    """``dataset.json``: counts and problems, no identifier, no file name, no salt."""
    from echosonar.ingest.cache import read_index
    from echosonar.taxonomy import LABEL_KEYS

    entries = read_index(inp.out)["studies"]
    views = Counter(c["view"] for e in entries for c in e["clips"])
    fr = cfg.dataset.split_fractions
    small = [s for s in ("val", "test") if splits.get(s, 0) < cfg.dataset.min_split_studies]
    if small and kept:
        problems.warning("splits", f"{', '.join(small)} split(s) have fewer than "
                         f"{cfg.dataset.min_split_studies} studies; evaluation needs a test "
                         "split and thresholds a val split")
    return {
        "format": FORMAT, "version": 1, "protocol": PROTOCOL, "id_from": cfg.dataset.id_from,
        "studies": len(kept), "clips": sum(views.values()),
        "studies_found": len(found) if cfg.dataset.id_from == "folder" else None,
        "label_rows_usable": len(rows),
        "splits": {s: splits.get(s, 0) for s in ("train", "val", "test")},
        "split_source": {"labels_file": counts["split_from_labels"],
                         "salted_key": counts["split_from_key"], "fractions": list(fr)},
        "positives": {k: sum(1 for e in entries if (e.get("labels") or {}).get(k)) for k in
                      LABEL_KEYS},
        "views": dict(sorted(views.items())),
        "view_source": {"views_file": counts["views_from_views_file"],
                        "dicom_header": counts["views_from_dicom_header"],
                        "classifier": counts["views_from_classifier"],
                        "unknown": counts["views_unknown"]},
        "view_model": bool(model), "other_clips_kept_out": counts["other_clips_kept_out"],
        "files_skipped": counts["files_skipped"],
        "reports": {"from_user": counts["reports_from_user"],
                    "from_labels": counts["reports_from_labels"],
                    "user_sections_filled_from_labels": counts["report_sections_from_labels"]},
        "measurements": {k: n for k, n in Counter(
            m for e in entries for m in (e.get("measurements") or {})).items()},
        "ground_truth_boxes": 0, "ed_es_frames": 0,
        "reasoning": "not stored: written after encode from each study's own detector evidence "
                     "and labels (echosonar dataset targets FEATURES)",
        "salt": "default (set ingest.salt per site)" if cfg.ingest.salt ==
                "echosonar-default-salt" else "site salt",
        "errors": len(problems.errors), "warnings": len(problems.warnings),
        "problems": problems.to_list(),
    }
