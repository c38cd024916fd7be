"""Fakes for app tests: a stages object with the adapter functions of ``echosonar.app.stages``.

The fake "DICOM" is a DICOM preamble + ``DICM`` then ``FAKEDCM <VIEW>``; anything else is skipped the way
ingest skips it. The study key is a hash of the files' bytes, so two uploads never share a key.
Frames are synthetic; boxes and the generation are built from the views present, with the real
``textformat`` renderer, so the result and the report exercise the real parser.
"""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import numpy as np
import pytest

from echosonar.app.bundle import Bundle, BundleSpec
from echosonar.schema import Clip, Study, StudyFeatures, ViewFeatures
from echosonar.taxonomy import (
    LABEL_KEYS,
    REPORT_SECTIONS,
    STRUCTURES,
    VIEW_STRUCTURES,
    VIEWS,
    assessable,
)
from echosonar.textformat import render_generation, render_view_line

T, S = 8, 32
PREAMBLE = b"\0" * 128 + b"DICM"  # sniffs as DICOM for the server's upload check
BOX = {"LV": [0.30, 0.10, 0.65, 0.55], "LA": [0.35, 0.58, 0.62, 0.85],
       "RA": [0.05, 0.55, 0.32, 0.85], "RV": [0.02, 0.12, 0.30, 0.52],
       "MV": [0.40, 0.52, 0.58, 0.60], "TV": [0.12, 0.50, 0.30, 0.58],
       "LVOT": [0.50, 0.40, 0.70, 0.55], "AV": [0.55, 0.40, 0.70, 0.55]}


def fake_dicom(path: Path, view: str, salt: str = "") -> Path:
    path.write_bytes(PREAMBLE + f"FAKEDCM {view} {salt}\n".encode() + bytes(range(256)))
    return path


def _ingest(paths, cfg):
    files = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    clips, skipped, h = [], [], hashlib.sha1()
    for f in files:
        data = f.read_bytes()[len(PREAMBLE):]
        if not data.startswith(b"FAKEDCM "):
            skipped.append((f.name, "not a DICOM file (no DICM marker) nor a video container"))
            continue
        h.update(data)
        view = data.split()[1].decode()
        rng = np.random.default_rng(int.from_bytes(hashlib.sha1(data).digest()[:4], "little"))
        frames = rng.random((T, 3 if view.endswith("COLOR") else 1, S, S)).astype(np.float32)
        known = view in VIEWS
        clips.append(Clip(view=view if known else "OTHER", frames=frames, cm_per_px=0.05,
                          frame_times=np.arange(T, dtype=np.float32) / 30,
                          view_conf=1.0 if known else 0.0, ed_index=0 if known else -1,
                          es_index=T // 2 if known else -1, source=f.name))
    key = h.hexdigest()[:16]
    return ([Study(key=key, clips=clips)] if clips else []), skipped


def _label_views(study, model, cfg):
    for c in study.clips:
        if c.view_conf == 0.0:
            c.view, c.view_conf = "A4C", 0.42  # low confidence on purpose: warns


def _det(clip):
    k = len(STRUCTURES)
    shown = VIEW_STRUCTURES.get(clip.view, ())
    boxes = np.zeros((T, k, 4), np.float32)
    scores = np.full((T, k), 0.05, np.float32)
    ed_boxes = {}
    for s in shown:
        i = STRUCTURES.index(s)
        b = np.array(BOX[s], np.float32)
        for t in range(T):  # the box breathes: smaller at t = T // 2
            shrink = 0.04 * np.sin(np.pi * t / T)
            boxes[t, i] = b + np.array([shrink, shrink, -shrink, -shrink])
        scores[:, i] = 0.9
        ed_boxes[s] = [float(v) for v in boxes[0, i]]
    meas = {"lvedd_cm": 5.1, "ef_pct": 57.0} if "LV" in shown else {}
    return types.SimpleNamespace(boxes=boxes, scores=scores, tokens=np.zeros((k, 4)),
                                 ed_boxes=ed_boxes, measurements=meas)


def _features(bundle, study, cfg, timer):
    with timer("detect"):
        dets = [_det(c) for c in study.clips]
    with timer("encode"):
        views = [ViewFeatures(view=c.view, clip_tokens=np.zeros((5, 4), np.float32),
                              structure_tokens=np.zeros((len(STRUCTURES), 4), np.float32),
                              structure_scores=d.scores.max(0), boxes=d.ed_boxes,
                              measurements=d.measurements, view_conf=c.view_conf)
                 for c, d in zip(study.clips, dets, strict=True)]
    return StudyFeatures(key=study.key, views=views), dets


def _generate(vlm, sf, max_new_tokens, thresholds=None, engine="auto"):
    present = {v.view: v for v in sf.views}
    lines = []
    for view in VIEWS:
        if view in present:
            fs = ["LV enlargement"] if view == "A4C" else []
            lines.append(render_view_line(view, present[view].boxes, "LV looks dilated",
                                          fs, "volume load"))
        else:
            na = [n for n in ("bicuspid aortic valve", "aortic regurgitation")
                  if not assessable({"bicuspid aortic valve": "bicuspid_aortic_valve",
                                     "aortic regurgitation": "aortic_regurgitation"}[n],
                                    tuple(present))]
            lines.append(render_view_line(view, None, not_assessable=na))
    report = {s: f"{s} text for {sf.key}." for s in REPORT_SECTIONS}
    return render_generation(lines, ["LV enlargement"], report), _scores()


def _scores():
    out = [0.1] * len(LABEL_KEYS)
    out[LABEL_KEYS.index("lv_enlargement")] = 0.81
    out[LABEL_KEYS.index("mitral_regurgitation")] = 0.55  # positive by score, not in text
    return out


def make_fake_stages():
    from echosonar.app import stages as real

    ns = types.SimpleNamespace(
        ingest=_ingest, label_views=_label_views, features=_features, generate=_generate,
        keyframe_indices=real.keyframe_indices,
        clip_structures=real.clip_structures, clip_measurements=real.clip_measurements)
    for name in ("view_classifier", "detector", "encoder", "vlm"):
        setattr(ns, f"load_{name}", lambda path, _n=name: f"fake-{_n}")
    return ns


@pytest.fixture
def fake_stages():
    return make_fake_stages()


@pytest.fixture
def fake_bundle(tmp_path):
    thr = {k: 0.5 for k in LABEL_KEYS}
    spec = BundleSpec(tmp_path / "bundle", {}, thr, "bundle", 256)
    return Bundle(spec, "vc", "det", "enc", "vlm",
                  {n: {"kind": n, "sha256": "0" * 64} for n in ("detector", "encoder", "vlm")})


@pytest.fixture
def study_dir(tmp_path):
    d = tmp_path / "study"
    d.mkdir()
    for v in ("A4C", "PLAX", "A4C_COLOR"):
        fake_dicom(d / f"{v.lower()}.dcm", v)
    (d / "notes.txt").write_text("not an image")
    return d


# ----------------------------------------------------------------------------------------------
# Real stages: one tiny quickstart per test session, shared by xdist workers through a lock
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_quickstart(tmp_path_factory):
    """A finished ``echosonar quickstart --budget tiny`` folder (a model bundle + simulated
    data). Built once per session; xdist workers share it via a file lock."""
    import fcntl
    import os

    from echosonar.app.quickstart import run_quickstart

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's folder, shared by its xdist workers
    out = root / "quickstart_tiny"
    with open(root / "quickstart_tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        q = run_quickstart(out, budget="tiny", seed=0, isolate=False)  # resumes if done
    return q


def live_server(app):
    """Start ``app`` with uvicorn on a free localhost port in a thread; returns (base, stop)."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        if time.time() - t0 > 20 or not th.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop():
        server.should_exit = True
        th.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop
