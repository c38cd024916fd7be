"""Study-set manifests: ``manifest.json`` beside the clip files (see :mod:`echosonar.schema`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from echosonar.io.atomic import atomic_write_json
from echosonar.schema import StudyRecord

MANIFEST = "manifest.json"
VERSION = 1


class ManifestError(ValueError):
    """A manifest is missing or malformed."""


def manifest_path(root: str | Path) -> Path:
    root = Path(root)
    return root if root.suffix == ".json" else root / MANIFEST


def write_manifest(root: str | Path, studies: list[StudyRecord], **meta: Any) -> Path:
    """Atomically write ``root/manifest.json`` with ``meta`` (preset, seed, ...) and studies."""
    path = manifest_path(root)
    atomic_write_json(path, {"version": VERSION, **meta,
                             "studies": [s.to_dict() for s in studies]})
    return path


def read_manifest(root: str | Path) -> tuple[dict[str, Any], list[StudyRecord]]:
    """Return ``(meta, studies)``; clip paths stay relative to the manifest's folder."""
    path = manifest_path(root)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}")
    try:
        data = json.loads(path.read_text())
        studies = [StudyRecord.from_dict(d) for d in data.pop("studies")]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ManifestError(f"malformed manifest {path}: {e}") from e
    return data, studies
