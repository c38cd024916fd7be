"""The ``result.json`` contract of ``echosonar analyze`` and its validator.

A result is plain JSON (version 1)::

    {"schema": "echosonar.result", "version": 1, "study_key": str, "created_utc": str,
     "status": "ok" | "not_assessable",     # not_assessable: no clip of a standard view
     "model":    {"bundle": str, "bundle_version": int, "echosonar_version": str,
                  "components": {name: {"kind": str, "sha256": str | null}}, "thresholds": str},
     "clips":    [{"index", "label", "view", "view_conf", "view_source", "n_frames", "cm_per_px",
                   "ed_index", "es_index", "keyframes_estimated",
                   "structures": [{"name", "score", "present", "box_ed", "box_es"}],
                   "measurements": {name: float},
                   "ood": {"score", "energy", "warn_at", "reject_at", "level", "reason",
                           "classifier_view"} | null}],   # the view classifier's OOD guard
     "ood":      {"checked": bool, "level": "in" | "unusual" | "out" | null,
                  "withheld": bool, "reason": str | null},  # withheld: no finding is called
     "views":    {"present": [view], "missing": [view], "not_assessable": [finding key]},
     "findings": [{"key", "name", "section", "score", "threshold", "positive", "in_answer",
                   "assessable"}],          # one per taxonomy.LABELS, in taxonomy order
     "answer_findings": [finding key],       # what the generated answer says
     "reasoning": {"well_formed": bool, "errors": [str],
                   "views": [{"view", "acquired", "text", "structures": {S: box01},
                              "findings": [name], "not_assessable": [name], "evidence"}]},
     "report":   {"sections": [{"key", "title", "text"}]},
     "generation": str,                      # the raw model output, for audit
     "warnings": [str],
     "timing_s": {"ingest", "view", "detect", "encode", "generate", "total"},  # ingest = decode + preprocess
     "peak_memory_mb": float}

Boxes (``box01``) are ``[x0, y0, x1, y1]`` in 0..1 of the preprocessed clip frame. No field holds
a file name, path or header value: clips are labelled "clip 1", "clip 2", ... and skipped inputs
by their position in the input list. The ``ood`` keys (clip and study) are optional, so
results written before the guard existed still validate; ``echosonar analyze`` always writes
them. OOD levels: ``in`` (like the training clips), ``unusual`` (distance at or above
``warn_at``: a visible warning and no finding is called), ``out`` (at or above ``reject_at``: not
cardiac ultrasound; the clip becomes OTHER and is not analysed). :data:`RESULT_SCHEMA` is a JSON Schema (draft 2020-12
subset); :func:`validate` checks it without third-party packages.
"""

from __future__ import annotations

from typing import Any

from echosonar.taxonomy import (
    CLASSIFIER_VIEWS,
    LABEL_KEYS,
    REPORT_SECTIONS,
    STRUCTURES,
    VIEWS,
)

SCHEMA_NAME = "echosonar.result"
SCHEMA_VERSION = 1
TIMING_KEYS = ("ingest", "view", "detect", "encode", "generate", "total")

_NUM = {"type": "number"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_BOX = {"type": "array", "items": {"type": "number", "minimum": 0.0, "maximum": 1.0},
        "minItems": 4, "maxItems": 4}


def _obj(props: dict[str, Any], extra: bool = False, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required,
            "additionalProperties": extra}


_STRUCTURE = _obj({"name": {"enum": list(STRUCTURES)}, "score": _NUM, "present": _BOOL,
                   "box_ed": {"type": ["array", "null"], **{k: v for k, v in _BOX.items()
                                                           if k != "type"}},
                   "box_es": {"type": ["array", "null"], **{k: v for k, v in _BOX.items()
                                                           if k != "type"}}})
_CLIP = _obj({
    "index": {"type": "integer", "minimum": 0}, "label": _STR,
    "view": {"enum": list(CLASSIFIER_VIEWS)},
    "view_conf": {"type": "number", "minimum": 0.0, "maximum": 1.0},
    "view_source": {"enum": ["given", "classifier"]},
    "n_frames": {"type": "integer", "minimum": 1},
    "cm_per_px": {"type": ["number", "null"]},
    "ed_index": {"type": "integer", "minimum": 0}, "es_index": {"type": "integer", "minimum": 0},
    "keyframes_estimated": _BOOL,
    "structures": {"type": "array", "items": _STRUCTURE},
    "measurements": {"type": "object", "additionalProperties": _NUM},
    "ood": {**_obj({
        "score": _NUM_OR_NULL, "energy": _NUM_OR_NULL, "warn_at": _NUM_OR_NULL,
        "reject_at": _NUM_OR_NULL, "level": {"enum": ["in", "unusual", "out", None]},
        "reason": _STR_OR_NULL, "classifier_view": {"enum": [*CLASSIFIER_VIEWS, None]}},
        required=["score", "level", "reason"]), "type": ["object", "null"]},
}, required=["index", "label", "view", "view_conf", "view_source", "n_frames", "cm_per_px",
             "ed_index", "es_index", "keyframes_estimated", "structures", "measurements"])
_OOD = _obj({"checked": _BOOL, "level": {"enum": ["in", "unusual", "out", None]},
             "withheld": _BOOL, "reason": _STR_OR_NULL})
_FINDING = _obj({
    "key": {"enum": list(LABEL_KEYS)}, "name": _STR, "section": _STR,
    "score": {"type": ["number", "null"]}, "threshold": {"type": "number"},
    "positive": {"type": ["boolean", "null"]}, "in_answer": _BOOL, "assessable": _BOOL,
})
_REASON_VIEW = _obj({
    "view": {"enum": list(VIEWS)}, "acquired": _BOOL, "text": _STR,
    "structures": {"type": "object", "additionalProperties": _BOX},
    "findings": {"type": "array", "items": _STR},
    "not_assessable": {"type": "array", "items": _STR}, "evidence": _STR,
})

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "EchoSonar analysis result",
    **_obj({
        "schema": {"enum": [SCHEMA_NAME]}, "version": {"enum": [SCHEMA_VERSION]},
        "study_key": {"type": "string", "minLength": 1}, "created_utc": _STR,
        "status": {"enum": ["ok", "not_assessable"]},
        "model": _obj({"bundle": _STR, "bundle_version": {"type": "integer"},
                       "echosonar_version": _STR,
                       "components": {"type": "object", "additionalProperties": _obj(
                           {"kind": _STR, "sha256": {"type": ["string", "null"]}})},
                       "thresholds": {"enum": ["bundle", "default"]}}),
        "clips": {"type": "array", "items": _CLIP, "minItems": 1},
        "views": _obj({"present": {"type": "array", "items": {"enum": list(CLASSIFIER_VIEWS)}},
                       "missing": {"type": "array", "items": {"enum": list(VIEWS)}},
                       "not_assessable": {"type": "array", "items": {"enum": list(LABEL_KEYS)}}}),
        "ood": _OOD,
        "findings": {"type": "array", "items": _FINDING, "minItems": len(LABEL_KEYS),
                     "maxItems": len(LABEL_KEYS)},
        "answer_findings": {"type": "array", "items": {"enum": list(LABEL_KEYS)}},
        "reasoning": _obj({"well_formed": _BOOL, "errors": {"type": "array", "items": _STR},
                           "views": {"type": "array", "items": _REASON_VIEW}}),
        "report": _obj({"sections": {"type": "array", "minItems": len(REPORT_SECTIONS),
                                     "maxItems": len(REPORT_SECTIONS),
                                     "items": _obj({"key": {"enum": list(REPORT_SECTIONS)},
                                                    "title": _STR, "text": _STR})}}),
        "generation": _STR,
        "warnings": {"type": "array", "items": _STR},
        "timing_s": _obj({k: {"type": "number", "minimum": 0.0} for k in TIMING_KEYS}),
        "peak_memory_mb": {"type": ["number", "null"]},
    }, required=["schema", "version", "study_key", "created_utc", "status", "model", "clips",
                 "views", "findings", "answer_findings", "reasoning", "report", "generation",
                 "warnings", "timing_s", "peak_memory_mb"]),
}

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


def _is(value: Any, name: str) -> bool:
    if name in ("number", "integer") and isinstance(value, bool):
        return False  # bool is an int subclass in Python, not in JSON
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def check(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Errors of ``value`` against the JSON-Schema subset used here (type, enum, properties,
    required, additionalProperties, items, minItems/maxItems, minimum/maximum, minLength)."""
    errs: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in types):
            return [f"{where}: expected {'/'.join(types)}, got {type(value).__name__}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errs += [f"{where}: missing key {k!r}" for k in schema.get("required", [])
                 if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += check(v, props[k], f"{where}.{k}")
            elif extra is False:
                errs.append(f"{where}: unexpected key {k!r}")
            elif isinstance(extra, dict):
                errs += check(v, extra, f"{where}.{k}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errs.append(f"{where}: needs at least {schema['minItems']} items, has {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(f"{where}: allows at most {schema['maxItems']} items, has {len(value)}")
        if "items" in schema:
            for i, v in enumerate(value):
                errs += check(v, schema["items"], f"{where}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{where}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errs.append(f"{where}: string shorter than {schema['minLength']}")
    return errs


def validate(result: dict[str, Any]) -> list[str]:
    """All schema errors of a result dict, plus cross-field checks; empty means valid."""
    errs = check(result, RESULT_SCHEMA)
    if errs:
        return errs
    keys = [f["key"] for f in result["findings"]]
    if keys != list(LABEL_KEYS):
        errs.append("$.findings: must list every taxonomy label once, in taxonomy order")
    secs = [s["key"] for s in result["report"]["sections"]]
    if secs != list(REPORT_SECTIONS):
        errs.append("$.report.sections: must follow taxonomy.REPORT_SECTIONS order")
    for c in result["clips"]:
        if max(c["ed_index"], c["es_index"]) >= c["n_frames"]:
            errs.append(f"$.clips[{c['index']}]: keyframe index beyond n_frames")
    return errs


class ResultError(ValueError):
    """A result dict does not follow :data:`RESULT_SCHEMA`."""


def assert_valid(result: dict[str, Any]) -> None:
    errs = validate(result)
    if errs:
        raise ResultError("invalid result: " + "; ".join(errs[:10]))
