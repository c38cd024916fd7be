"""The model bundle: every trained part ``analyze`` needs, in one folder.

Layout (what ``echosonar quickstart --train --out DIR`` leaves in ``DIR``)::

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

A *shipped* bundle (``echosonar bundle ... --ship``; the repository's ``models/echosonar-r``)
copies only what loading needs (``config.json``, ``model.safetensors`` with its floating weights
in float16, the VLM's tokenizer JSON), drops training state, and lists the SHA-256 of every file
in ``DIR/CHECKSUMS.sha256`` (``sha256sum -c`` format; ``bundle.json`` says ``"checksums"``).
Reading such a bundle verifies every listed file first and refuses, naming the file, on any
mismatch, missing file or unlisted file inside a component folder. The loaders upcast float16
weights to float32 (:func:`echosonar.io.checkpoint.load_checkpoint`).

Without ``--model``, ``analyze`` and ``serve`` use :func:`default_model_dir`: ``$ECHOSONAR_MODEL``
if set, else ``models/echosonar-r`` of the checkout the package runs from (``pip install -e .``).

Component paths in ``bundle.json`` are relative to ``DIR`` (or absolute), so a bundle can point
at checkpoints trained elsewhere. A folder without ``bundle.json`` but with the four standard
sub-folders loads too (thresholds 0.5). Any component can be overridden per call
(``echosonar analyze --detector DIR ...``), which is how ``analyze`` uses any trained checkpoint.
The view classifier is optional: without it, clips whose view is unknown are an error that names
the missing part.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


CHECKSUMS_FILE = "CHECKSUMS.sha256"
SHIPPED_NAME = "echosonar-r"
MODEL_ENV = "ECHOSONAR_MODEL"
#: the repository keeps shipped bundles in git without LFS: refuse to ship anything bigger
SHIP_LIMIT_MB = 30.0
#: files of a checkpoint folder a shipped bundle keeps besides config.json + model.safetensors
SHIP_EXTRA = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "ood_stats.safetensors")  # the view classifier's out-of-distribution guard


class BundleError(ValueError):
    """A model bundle is missing a part or is malformed; the message names the part."""


def default_model_dir() -> Path:
    """The bundle ``analyze``/``serve`` use without ``--model``: ``$ECHOSONAR_MODEL`` if set,
    else the shipped ``models/echosonar-r`` of the source checkout this package is installed
    from (``src/echosonar/app/bundle.py`` -> ``<checkout>/models/echosonar-r``)."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "models" / SHIPPED_NAME


def missing_default_model_message(root: Path) -> str:
    return (f"the shipped model is not at {root}: it lives in the repository's models/"
            f"{SHIPPED_NAME} (install from a clone with `pip install -e .`), or set "
            f"{MODEL_ENV}=BUNDLE, or pass --model BUNDLE (`echosonar quickstart --train` "
            "trains one)")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed_files(root: Path) -> list[str]:
    """Every regular, non-hidden file under ``root`` but the checksum list (posix, sorted)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) \
                and rel.as_posix() != CHECKSUMS_FILE:
            out.append(rel.as_posix())
    return out


def write_checksums(root: str | Path) -> Path:
    """``root/CHECKSUMS.sha256``: the SHA-256 of every file in the bundle (``sha256sum -c``
    format). Rerun after editing any file (e.g. the model card): ``echosonar bundle --rehash``."""
    from echosonar.io.atomic import atomic_write_text

    root = Path(root)
    lines = [f"{file_sha256(root / rel)}  {rel}\n" for rel in _listed_files(root)]
    atomic_write_text(root / CHECKSUMS_FILE, "".join(lines))
    return root / CHECKSUMS_FILE


def read_checksums(root: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``root/CHECKSUMS.sha256``; BundleError if malformed."""
    root = Path(root)
    path = root / CHECKSUMS_FILE
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"model bundle {root}: cannot read {CHECKSUMS_FILE}: {e}") from e
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        rel = rel.lstrip("*")
        bad = (not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)
               or not rel or rel.startswith("/") or ".." in Path(rel).parts)
        if bad:
            raise BundleError(f"model bundle {root}: {CHECKSUMS_FILE} line {n} is not "
                              "'<sha256>  <relative path>'")
        out[rel] = digest
    if not out:
        raise BundleError(f"model bundle {root}: {CHECKSUMS_FILE} lists no files")
    return out


def verify_checksums(root: str | Path, components: tuple[str, ...] = COMPONENTS) -> int:
    """Check every file listed in ``root/CHECKSUMS.sha256`` and that each component folder
    holds no unlisted file; returns the number of files checked. Raises :class:`BundleError`
    naming the first bad file."""
    root = Path(root)
    listed = read_checksums(root)
    for rel, digest in listed.items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"model bundle {root}: {rel} is listed in {CHECKSUMS_FILE} but "
                              "missing")
        if file_sha256(p) != digest:
            raise BundleError(f"model bundle {root}: {rel} does not match its SHA-256 in "
                              f"{CHECKSUMS_FILE} (modified or corrupted); restore the file "
                              "(git checkout) or re-ship the bundle")
    for rel in _listed_files(root):
        if rel.split("/", 1)[0] in components and rel not in listed:
            raise BundleError(f"model bundle {root}: {rel} is not listed in {CHECKSUMS_FILE} "
                              "(a file added to a shipped bundle is refused)")
    return len(listed)


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
    if root.is_dir() and (root / CHECKSUMS_FILE).is_file():
        verify_checksums(root)
    if root.is_dir() and (root / BUNDLE_FILE).is_file():
        path = root / BUNDLE_FILE
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path} is not an EchoSonar model bundle "
                              f"(expected \"format\": \"{BUNDLE_FORMAT}\")")
        if data.get("checksums") and not (root / CHECKSUMS_FILE).is_file():
            raise BundleError(f"model bundle {root}: {CHECKSUMS_FILE} is missing ({path} says "
                              "the bundle ships with checksums)")
        if int(data.get("version", 0)) > BUNDLE_VERSION:
            raise BundleError(f"{path} has bundle version {data.get('version')}, newer than this "
                              f"echosonar understands ({BUNDLE_VERSION}); upgrade echosonar")
    elif not root.is_dir() and len(overrides) < len(REQUIRED):
        raise BundleError(f"model bundle not found: {root} (leave --model out for the shipped "
                          f"model, run `echosonar quickstart --train --out {root}` to train "
                          "one, or pass every component with --detector, --encoder and --vlm)")
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
                                                               "echosonar_version", "checksums",
                                                               "weights_dtype")})


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
    model = args.model
    if model is None:  # the shipped model
        model = default_model_dir()
        if not model.is_dir() and not all(overrides[c] for c in REQUIRED):
            print(f"echosonar {command}: {missing_default_model_message(model)}",
                  file=sys.stderr)
            return None
    try:
        return load_bundle(model, overrides)
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


# ---------------------------------------------------------------------------------------------
# Shipping: a compact, checksummed copy (float16 weights, no training state)
# ---------------------------------------------------------------------------------------------

def _half(tensors: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """float32/float64 tensors -> float16 where the round trip is faithful (finite, within
    rtol 1e-3 / atol 1e-6); the others (and integer tensors) stay as they are. Returns the
    tensors and the names kept in full precision."""
    import torch

    out, kept = {}, []
    for k, v in tensors.items():
        if v.dtype in (torch.float32, torch.float64):
            h = v.to(torch.float16)
            if torch.isfinite(h).all() and torch.allclose(h.float(), v.float(), rtol=1e-3,
                                                          atol=1e-6):
                out[k] = h
                continue
            kept.append(k)
        out[k] = v
    return out, kept


def ship_component(src: str | Path, dest: str | Path, half: bool = True) -> dict[str, Any]:
    """Copy one checkpoint folder to ``dest`` with only what loading needs: ``config.json``
    (its weights checksum updated), ``model.safetensors`` (floating weights in float16 when
    ``half``) and the tokenizer JSON files; training state, metrics and sub-folders stay
    behind. Returns ``{kind, source_sha256, sha256, float32_tensors, run_info}``."""
    from echosonar.io.checkpoint import (
        CONFIG,
        WEIGHTS,
        load_tensors,
        read_checkpoint_config,
        save_tensors,
    )

    src, dest = Path(src), Path(dest)
    data = read_checkpoint_config(src)
    tensors = load_tensors(src / WEIGHTS, data.get("sha256"))
    kept: list[str] = []
    if half:
        tensors, kept = _half(tensors)
    dest.mkdir(parents=True, exist_ok=True)
    digest = save_tensors(dest / WEIGHTS, tensors)
    meta = dict(data.get("meta") or {})
    before = meta.get("shipped") if isinstance(meta.get("shipped"), dict) else {}
    run_info = before.get("run_info")  # re-shipping a shipped component keeps its origin
    for d in (src, src.parent):  # a run folder's run_info.json (seed, commit, command, time)
        if (d / "run_info.json").is_file():
            try:
                info = json.loads((d / "run_info.json").read_text())
                run_info = {k: info.get(k) for k in ("command", "seed", "git_commit",
                                                     "time_utc") if k in info}
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
            break
    source_sha = before.get("source_sha256") or data.get("sha256")
    meta["shipped"] = {"weights_dtype": "float16" if half else "as trained",
                       "float32_tensors": kept, "source_sha256": source_sha,
                       "run_info": run_info}
    atomic_write_json(dest / CONFIG, {**data, "sha256": digest, "meta": meta})
    for name in SHIP_EXTRA:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    return {"kind": data.get("kind"), "source_sha256": source_sha, "sha256": digest,
            "float32_tensors": kept, "run_info": run_info}


def bundle_size_mb(root: str | Path) -> float:
    root = Path(root)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def ship_bundle(out: str | Path, components: dict[str, str | Path],
                thresholds: dict[str, float] | None, max_new_tokens: int,
                half: bool = True, limit_mb: float = SHIP_LIMIT_MB,
                provenance: dict[str, Any] | None = None) -> Path:
    """Write a shipped bundle to ``out`` (replacing the bundle there, keeping its ``*.md``
    files, e.g. the model card): components via :func:`ship_component`, ``bundle.json``
    (``"checksums"``, ``"weights_dtype"``), then ``CHECKSUMS.sha256`` over every file. Refuses
    (nothing replaced) when the result is over ``limit_mb``."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.ship-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shipped = {}
        for name, src in components.items():
            if name not in COMPONENTS:
                raise BundleError(f"unknown bundle component {name!r}; known: {COMPONENTS}")
            shipped[name] = ship_component(src, tmp / name, half)
        write_bundle(tmp, {n: tmp / n for n in components}, thresholds, max_new_tokens,
                     components_shipped=shipped, **(provenance or {}))
        data = json.loads((tmp / BUNDLE_FILE).read_text())
        data["checksums"] = CHECKSUMS_FILE
        data["weights_dtype"] = "float16" if half else "as trained"
        atomic_write_json(tmp / BUNDLE_FILE, data)
        if out.is_dir():
            for doc in out.glob("*.md"):
                shutil.copyfile(doc, tmp / doc.name)
        write_checksums(tmp)
        size = bundle_size_mb(tmp)
        if size > limit_mb:
            raise BundleError(f"shipped bundle would be {size:.1f} MB, over the {limit_mb:g} MB "
                              "limit; nothing written")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
