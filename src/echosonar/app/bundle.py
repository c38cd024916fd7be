"""The model bundle: every trained part ``analyze`` needs, in one folder.

Layout (what ``echosonar quickstart --out DIR`` leaves in ``DIR``)::

    DIR/bundle.json          {"format": "echosonar-bundle", "version": 1,
                              "echosonar_version": str, "created_utc": str,
                              "components": {"view_classifier": "view_classifier",
                                             "detector": "detector", "encoder": "encoder",
                                             "vlm": "vlm"},
                              "thresholds": {label_key: float},   # missing labels -> 0.5
                              "generation": {"max_new_tokens": int},
                              "provenance": {...}}                # free-form, e.g. budget, data
    DIR/view_classifier/     a checkpoint folder (config.json + model.safetensors)
    DIR/detector/, DIR/encoder/, DIR/vlm/

Component paths in ``bundle.json`` are relative to ``DIR`` (or absolute), so a bundle can point
at checkpoints trained elsewhere. A folder without ``bundle.json`` but with the four standard
sub-folders loads too (thresholds 0.5). Any component can be overridden per call
(``echosonar analyze --detector DIR ...``), which is how ``analyze`` uses any trained checkpoint.
The view classifier is optional: without it, clips whose view is unknown are an error that names
the missing part.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from echosonar.io.atomic import atomic_write_json
from echosonar.taxonomy import LABEL_KEYS

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "echosonar-bundle"
BUNDLE_VERSION = 1
COMPONENTS: tuple[str, ...] = ("view_classifier", "detector", "encoder", "vlm")
REQUIRED: tuple[str, ...] = ("detector", "encoder", "vlm")
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_NEW_TOKENS = 1600  # a six-view target is ~1,300-1,600 tokens (reason notes)
#: how to make each component, for error messages
HOW_TO_TRAIN = {
    "view_classifier": "echosonar train view-classifier",
    "detector": "echosonar train detector", "encoder": "echosonar train encoder",
    "vlm": "echosonar train sft (then echosonar train grpo)",
}


class BundleError(ValueError):
    """A model bundle is missing a part or is malformed; the message names the part."""


@dataclass
class BundleSpec:
    """What ``bundle.json`` says, with component paths resolved (nothing loaded yet)."""

    root: Path
    components: dict[str, Path]
    thresholds: dict[str, float]
    thresholds_source: str  # "bundle" or "default"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)


@dataclass
class Bundle:
    """A loaded bundle: the models plus the spec. ``view_classifier`` may be None."""

    spec: BundleSpec
    view_classifier: Any
    detector: Any
    encoder: Any
    vlm: Any
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {kind, sha256}


def read_bundle_spec(root: str | Path, overrides: dict[str, str | Path] | None = None) -> BundleSpec:
    """Parse and check ``root/bundle.json`` (or the default layout) without loading models.

    ``overrides`` maps component names to checkpoint folders that replace the bundle's.
    """
    root = Path(root)
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    unknown = set(overrides) - set(COMPONENTS)
    if unknown:
        raise BundleError(f"unknown bundle component(s) {sorted(unknown)}; known: {COMPONENTS}")
    data: dict[str, Any] = {}
    if root.is_dir() and (root / BUNDLE_FILE).is_file():
        path = root / BUNDLE_FILE
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path} is not an EchoSonar model bundle "
                              f"(expected \"format\": \"{BUNDLE_FORMAT}\")")
        if int(data.get("version", 0)) > BUNDLE_VERSION:
            raise BundleError(f"{path} has bundle version {data.get('version')}, newer than this "
                              f"echosonar understands ({BUNDLE_VERSION}); upgrade echosonar")
    elif not root.is_dir() and len(overrides) < len(REQUIRED):
        raise BundleError(f"model bundle not found: {root} (run `echosonar quickstart --out "
                          f"{root}` to build one, or pass every component with --detector, "
                          "--encoder and --vlm)")
    rel = data.get("components", {c: c for c in COMPONENTS})
    comps: dict[str, Path] = {}
    for name in COMPONENTS:
        p = Path(overrides[name]) if name in overrides else (
            root / rel[name] if name in rel else None)
        if p is None or not p.exists():
            if name in REQUIRED:
                where = p if p is not None else f"(no '{name}' entry in {root / BUNDLE_FILE})"
                raise BundleError(f"model bundle {root}: missing component '{name}' at {where}; "
                                  f"train it with `{HOW_TO_TRAIN[name]}` or pass --"
                                  f"{name.replace('_', '-')} DIR")
            continue
        comps[name] = p
    thresholds, source = _thresholds(data.get("thresholds"), root)
    gen = data.get("generation", {})
    return BundleSpec(root, comps, thresholds, source,
                      int(gen.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                      {k: v for k, v in data.items() if k in ("provenance", "created_utc",
                                                               "echosonar_version")})


def _thresholds(raw: Any, root: Path) -> tuple[dict[str, float], str]:
    if raw is None:
        return {k: DEFAULT_THRESHOLD for k in LABEL_KEYS}, "default"
    if not isinstance(raw, dict):
        raise BundleError(f"{root / BUNDLE_FILE}: 'thresholds' must map label keys to numbers")
    bad = set(raw) - set(LABEL_KEYS)
    if bad:
        raise BundleError(f"{root / BUNDLE_FILE}: unknown label(s) in thresholds: {sorted(bad)}")
    out = {}
    for k in LABEL_KEYS:
        v = raw.get(k, DEFAULT_THRESHOLD)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise BundleError(f"{root / BUNDLE_FILE}: threshold for {k} must be in [0, 1], "
                              f"got {v!r}")
        out[k] = float(v)
    return out, "bundle"


def load_bundle(root: str | Path, overrides: dict[str, str | Path] | None = None,
                stages: ModuleType | Any = None) -> Bundle:
    """Read the spec and load every component with the stages' own loaders.

    ``stages`` defaults to :mod:`echosonar.app.stages` (tests inject fakes). Loading errors are
    re-raised as :class:`BundleError` naming the component and its folder.
    """
    if stages is None:
        from echosonar.app import stages as default_stages

        stages = default_stages
    spec = read_bundle_spec(root, overrides)
    loaded: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, path in spec.components.items():
        try:
            loaded[name] = getattr(stages, f"load_{name}")(path)
        except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear message
            raise BundleError(f"model bundle {spec.root}: cannot load '{name}' from {path}: "
                              f"{type(e).__name__}: {e}") from e
        info[name] = _component_info(path)
    return Bundle(spec, loaded.get("view_classifier"), loaded["detector"], loaded["encoder"],
                  loaded["vlm"], info)


def bundle_from_args(args: Any, command: str) -> Bundle | None:
    """The ``--model`` bundle with the ``--view-classifier/--detector/--encoder/--vlm``
    overrides of the analyze and serve commands; on failure prints ``echosonar COMMAND: why``
    to stderr and returns None (the caller exits with 2)."""
    import sys

    overrides = {"view_classifier": args.view_classifier, "detector": args.detector,
                 "encoder": args.encoder, "vlm": args.vlm}
    try:
        return load_bundle(args.model, overrides)
    except BundleError as e:
        print(f"echosonar {command}: {e}", file=sys.stderr)
        return None


def _component_info(path: Path) -> dict[str, Any]:
    """``{kind, sha256}`` from a checkpoint's ``config.json`` (kind "unknown" if absent)."""
    cfg = path / "config.json"
    try:
        data = json.loads(cfg.read_text())
        return {"kind": str(data.get("kind", "unknown")), "sha256": data.get("sha256")}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {"kind": "unknown", "sha256": None}


def val_thresholds(vlm: Any, studies: list[Any], batch_size: int = 8
                   ) -> tuple[dict[str, float] | None, str]:
    """Per-label thresholds maximising balanced accuracy of the VLM's label-head scores on
    ``studies`` (a val split; the baselines' rule, ``encode.metrics.choose_thresholds``).

    Returns ``(thresholds, note)``; ``(None, note)`` when there are no studies (then the bundle
    falls back to 0.5). A cut above every score ("never positive") is clipped to 1.
    """
    if not studies:
        return None, "no val studies: thresholds 0.5"
    from echosonar.evaluate.run import label_head_thresholds

    thr = {k: min(1.0, max(0.0, float(t)))
           for k, t in label_head_thresholds(vlm, studies, batch_size).items()}
    return thr, f"chosen on {len(studies)} val studies (max balanced accuracy per label)"


def write_bundle(root: str | Path, components: dict[str, str | Path],
                 thresholds: dict[str, float] | None = None,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **provenance: Any) -> Path:
    """Write ``root/bundle.json`` (atomically). Component paths inside ``root`` are stored
    relative to it so the bundle folder can be moved."""
    from echosonar import __version__

    root = Path(root)
    rel = {}
    for name, p in components.items():
        if name not in COMPONENTS:
            raise BundleError(f"unknown bundle component {name!r}; known: {COMPONENTS}")
        p = Path(p).resolve()
        try:
            rel[name] = str(p.relative_to(root.resolve()))
        except ValueError:
            rel[name] = str(p)
    data = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "echosonar_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "components": rel, "generation": {"max_new_tokens": int(max_new_tokens)},
            "provenance": provenance}
    if thresholds is not None:
        data["thresholds"] = {k: float(thresholds[k]) for k in LABEL_KEYS if k in thresholds}
    atomic_write_json(root / BUNDLE_FILE, data)
    return root / BUNDLE_FILE
