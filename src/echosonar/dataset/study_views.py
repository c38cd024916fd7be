"""Give each clip of one ingested study its view: views file, then DICOM header, then classifier.

Ingest names a clip's file by position + salted hash (``ingest.raw.source_label``), never by its
name; this module rebuilds that label for each input file, in memory, to know which file a clip
came from, so a views-file row or a header tag reaches the right clip. See
:mod:`echosonar.dataset.views` for the precedence and the colour rule.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from echosonar.dataset.problems import Problems
from echosonar.dataset.views import dicom_view, with_color
from echosonar.schema import Study
from echosonar.taxonomy import COLOR_VIEWS, OTHER_VIEW


def source_map(files: list[Path], cfg: Any) -> dict[str, Path]:
    """``{Clip.source: file}`` for files ingested together in this order (ingest's naming)."""
    from echosonar.ingest.raw import source_label

    if cfg.ingest.keep_source_names:
        return {f.name: f for f in files}
    return {source_label(f, cfg.ingest.salt, i): f for i, f in enumerate(files)}


def assign_views(study: Study, files: list[Path], given: dict[Path, str], model: Any, cfg: Any,
                 where: str, problems: Problems, counts: Counter) -> None:
    """Set ``view``/``view_conf`` of every clip in place (``given``: views-file rows already
    matched to files). Given views get ``view_conf = 1``; classifier views their confidence;
    clips nobody can name stay ``OTHER`` (the caller keeps them out)."""
    from echosonar.ingest.study import label_views

    src = source_map(files, cfg)
    for c in study.clips:
        f = src.get(c.source)
        channels = int(c.frames.shape[1])
        if f is not None and f in given:
            c.view, c.view_conf = given[f], 1.0
            counts["views_from_views_file"] += 1
            if (c.view in COLOR_VIEWS) != (channels == 3) and c.view != OTHER_VIEW:
                problems.warning(where, f"{c.source}: the views file says {c.view} but the clip "
                                 f"is {'colour' if channels == 3 else 'greyscale'}; kept as given")
            continue
        tag = dicom_view(f) if f is not None else None
        if tag is not None:
            c.view, c.view_conf = with_color(tag, channels), 1.0
            counts["views_from_dicom_header"] += 1
            continue
        c.view, c.view_conf = OTHER_VIEW, 0.0
    unknown = sum(1 for c in study.clips if c.view_conf == 0.0)
    if unknown and model is not None:
        label_views([study], model, cfg.ingest.view_min_conf)
        counts["views_from_classifier"] += unknown
    elif unknown:
        counts["views_unknown"] += unknown
        problems.warning(where, f"{unknown} clip(s) have no view (no views-file row, no DICOM "
                         "view tag) and no --view-model was given; left out as OTHER")
