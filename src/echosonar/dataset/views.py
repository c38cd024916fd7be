"""Where a user's clip gets its view: a views file, the DICOM header, or the view classifier.

Order of precedence for one clip:

1. the **views file** (``--views views.csv``: columns ``study``, ``file``, ``view``; ``file`` is
   the path relative to the study folder, or the base name when that is unique in the study);
2. the **DICOM header**: View Code Sequence (0054,0220), the standard place an echo system
   records the view (DICOM CID 12226, SNOMED CT codes; the code meaning is matched too). Ingest
   reads no view tag, so this module reads that one sequence from the header, nothing else; only
   the view it maps to is kept. The header cannot say colour or not: a 3-channel (colour Doppler)
   clip of A4C/PLAX becomes A4C_COLOR/PLAX_COLOR, and of a view without a colour class, OTHER;
3. the **view classifier** (``--view-model``) for the rest.

Clips that end as ``OTHER`` are kept out of the dataset and counted.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from echosonar.dataset.labels import find_id_column, norm, read_table, table_rows
from echosonar.dataset.problems import Problems, quoted
from echosonar.taxonomy import CLASSIFIER_VIEWS, COLOR_VIEWS, OTHER_VIEW

#: SNOMED CT codes of DICOM CID 12226 (Echocardiography Image View) -> taxonomy view
VIEW_CODES: dict[str, str] = {"399214001": "A4C", "399232001": "A2C", "399139001": "PLAX",
                              "399239005": "PSAX_AV"}
#: normalised code meanings -> view (checked in order; the first contained phrase wins)
VIEW_MEANINGS: tuple[tuple[str, str], ...] = (
    ("apical_four_chamber", "A4C"), ("apical_4_chamber", "A4C"), ("apical_two_chamber", "A2C"),
    ("apical_2_chamber", "A2C"), ("parasternal_long_axis", "PLAX"),
    ("parasternal_short_axis_at_the_aortic_valve", "PSAX_AV"),
    ("parasternal_short_axis_view_at_the_aortic_valve", "PSAX_AV"))
#: B-mode view -> its colour-Doppler class
COLOR_OF: dict[str, str] = {"A4C": "A4C_COLOR", "PLAX": "PLAX_COLOR"}


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom's warnings and log lines can quote header values; nothing of them may escape."""
    logger = logging.getLogger("pydicom")
    old = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = old


def dicom_view(path: str | Path) -> str | None:
    """The B-mode view a DICOM file's View Code Sequence names, or None (no such sequence, an
    unknown code, not a DICOM file)."""
    import pydicom

    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(str(path), stop_before_pixels=True,
                                 specific_tags=[(0x0054, 0x0220)])
            seq = ds.get((0x0054, 0x0220))
            items = list(seq.value) if seq is not None else []
            for item in items:
                code = str(getattr(item, "CodeValue", "") or "").strip()
                if code in VIEW_CODES:
                    return VIEW_CODES[code]
                meaning = norm(str(getattr(item, "CodeMeaning", "") or ""))
                for phrase, view in VIEW_MEANINGS:
                    if phrase in meaning:
                        return view
    except Exception:  # noqa: BLE001 - not DICOM, unreadable: ingest reports the file itself
        return None
    return None


def with_color(view: str, channels: int) -> str:
    """A header view made consistent with the clip's colour: 3 channels -> the colour class
    (OTHER when the view has none), 1 channel -> as given.

    >>> with_color("A4C", 3), with_color("A2C", 3), with_color("PLAX", 1)
    ('A4C_COLOR', 'OTHER', 'PLAX')
    """
    if channels == 3 and view not in COLOR_VIEWS:
        return COLOR_OF.get(view, OTHER_VIEW)
    return view


def read_views_file(path: str | Path, id_column: str,
                    problems: Problems) -> dict[str, dict[str, tuple[str, str]]]:
    """``{study_id: {file: (view, where)}}`` from a views CSV; bad rows become problems.

    ``file`` is kept as written (relative path or base name, ``/`` separators); ``where`` is
    the row's position, for problems found later (no such study or file)."""
    what = "views"
    table = read_table(path, what, problems)
    if table is None:
        return {}
    jsonl = Path(path).suffix.lower() in (".jsonl", ".ndjson")
    idc = find_id_column(table, id_column, what, problems)
    if idc is None:
        return {}
    for col in ("file", "view"):
        if col not in table.headers:
            problems.error(what, f"no {col!r} column (needs study, file and view columns)")
            return {}
    out: dict[str, dict[str, tuple[str, str]]] = {}
    upper = {v.upper(): v for v in CLASSIFIER_VIEWS}
    for _i, where, sid, cells in table_rows(table.rows, what, jsonl, idc, problems):
        file = str(cells.get("file", "") or "").strip().replace("\\", "/")
        view = upper.get(str(cells.get("view", "") or "").strip().upper())
        if not sid or not file:
            problems.error(where, "empty identifier or file")
        elif view is None:
            problems.error(where, f"unknown view {quoted(str(cells.get('view', '')))}; known: "
                           f"{', '.join(CLASSIFIER_VIEWS)}")
        elif file in out.get(sid, {}):
            problems.error(where, f"the same file as {out[sid][file][1]}; the later row is "
                           "left out")
        else:
            out.setdefault(sid, {})[file] = (view, where)
    return out


def match_views(given: dict[str, tuple[str, str]], rel: dict[Path, str],
                problems: Problems) -> dict[Path, str]:
    """Map one study's views-file rows onto its files (``rel``: ``{path: path relative to the
    study folder}``), returning ``{path: view}``; rows matching no file, or a base name shared
    by several files, become problems."""
    by_name: dict[str, list[Path]] = {}
    for p in rel:
        by_name.setdefault(p.name, []).append(p)
    out: dict[Path, str] = {}
    for file, (view, where) in given.items():
        hit = [p for p, r in rel.items() if r == file]
        if not hit and len(by_name.get(file, [])) == 1:
            hit = by_name[file]
        if not hit:
            many = len(by_name.get(file, [])) > 1
            problems.error(where, "the file name is not unique in its study; give the path "
                           "relative to the study folder" if many else
                           "no such file in the study")
            continue
        out[hit[0]] = view
    return out
