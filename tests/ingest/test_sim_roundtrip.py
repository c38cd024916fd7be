"""Simulated studies round-trip: ingested clips equal the rendered frames inside the sector,
with the manifest's spacing, boxes, ED/ES and targets; the cache returns them unchanged."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from echosonar.config.ingest import IngestConfig
from echosonar.ingest import ingest_manifest, iter_cache, write_cache
from echosonar.ingest.cache import CacheWriter, read_index
from echosonar.ingest.raw import salted_hash
from echosonar.ingest.sector import geometric_sector_mask
from echosonar.io.manifest import read_manifest
from echosonar.taxonomy import COLOR_VIEWS


def _source(sim_set, rec):
    arr = pydicom.dcmread(sim_set / rec.path).pixel_array
    return arr if arr.ndim == 4 else arr[..., None]


def test_exact_roundtrip_at_native_scale(sim_set):
    _, recs = read_manifest(sim_set)
    x0, y0, x1, y1 = recs[0].clips[0].sector["bbox"]
    w, h = x1 - x0 + 1, y1 - y0 + 1  # DICOM region corners are inclusive
    cfg = IngestConfig(image_size=max(w, h), clip_len=recs[0].clips[0].n_frames)
    studies = ingest_manifest(sim_set, cfg)
    assert [s.key for s in studies] == [salted_hash(r.key, cfg.salt) for r in recs]
    n_checked = 0
    for st, rec in zip(studies, recs, strict=True):
        assert (st.labels, st.measurements, st.reasoning, st.report, st.split) == (
            rec.labels, rec.measurements, rec.reasoning, rec.report, rec.split)
        assert [c.view for c in st.clips] == [c.view for c in rec.clips]
        for clip, cr in zip(st.clips, rec.clips, strict=True):
            src = _source(sim_set, cr)
            bx0, by0, bx1, by1 = cr.sector["bbox"]
            inside = geometric_sector_mask(src.shape[1:3], cr.sector)[by0:by1 + 1, bx0:bx1 + 1]
            crop = src[:, by0:by1 + 1, bx0:bx1 + 1].astype(np.float32) / 255
            got = clip.frames.transpose(0, 2, 3, 1)[:, :h, (max(w, h) - w) // 2:][:, :, :w]
            assert clip.frames.shape[1] == (3 if cr.view in COLOR_VIEWS else 1)
            if clip.frames.shape[1] == 1:
                crop = crop @ np.array([0.299, 0.587, 0.114], np.float32)[:, None] \
                    if crop.shape[-1] == 3 else crop
            # inside the sector: the rendered pixels, exactly; outside: zero
            np.testing.assert_allclose(got[:, inside], crop[:, inside], atol=1e-5)
            assert got[:, ~inside].max() == 0
            assert clip.cm_per_px == pytest.approx(cr.cm_per_px)
            assert (clip.ed_index, clip.es_index) == (cr.ed_frames[0], cr.es_frames[0])
            for t in range(len(clip.boxes)):
                for name, b in cr.boxes[t].items():
                    exp = [b[0] - bx0 + (max(w, h) - w) // 2, b[1] - by0,
                           b[2] - bx0 + (max(w, h) - w) // 2, b[3] - by0]
                    np.testing.assert_allclose(clip.boxes[t][name], exp, atol=1e-3)
            n_checked += 1
    assert n_checked >= 10


def test_downscaled_clip_matches_a_box_filtered_reference(sim_set):
    """At 32 px the clip is the sector crop, aspect kept, resized: compare with a Pillow BOX
    downsample of the masked crop (another filter), both low-passed."""
    from PIL import Image
    from scipy.ndimage import binary_erosion, gaussian_filter

    _, recs = read_manifest(sim_set)
    st = ingest_manifest(sim_set, IngestConfig(image_size=32, clip_len=8))[0]
    cr, clip = recs[0].clips[0], st.clips[0]  # A4C, B-mode
    bx0, by0, bx1, by1 = cr.sector["bbox"]
    w, h = bx1 - bx0 + 1, by1 - by0 + 1
    scale = 32 / max(w, h)
    assert clip.cm_per_px == pytest.approx(cr.cm_per_px / scale)
    nw, nh = int(round(w * scale)), int(round(h * scale))
    ox = (32 - nw) // 2
    inside = geometric_sector_mask((64, 64), cr.sector)[by0:by1 + 1, bx0:bx1 + 1]
    src = _source(sim_set, cr)[:, by0:by1 + 1, bx0:bx1 + 1, 0] * inside
    ref = np.stack([np.asarray(Image.fromarray(f.astype(np.uint8)).resize((nw, nh),
                                                                          Image.Resampling.BOX))
                    for f in src]).astype(np.float32) / 255
    got = clip.frames[:, 0, :nh, ox:ox + nw]
    m_in = np.asarray(Image.fromarray(inside.astype(np.uint8) * 255).resize((nw, nh))) > 127
    core = binary_erosion(m_in, iterations=2)
    a = np.stack([gaussian_filter(f, 1.0) for f in got])[:, core]
    b = np.stack([gaussian_filter(f, 1.0) for f in ref])[:, core]
    assert np.abs(a - b).mean() < 0.02 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_video_copies_ingest_like_the_dicoms(sim_set):
    cfg = IngestConfig(clip_len=8)
    dcm = ingest_manifest(sim_set, cfg)
    vid = ingest_manifest(sim_set, IngestConfig(clip_len=8, prefer_video=True))
    for a, b in zip(dcm[0].clips, vid[0].clips, strict=True):
        assert a.frames.shape == b.frames.shape and a.cm_per_px == pytest.approx(b.cm_per_px)
        assert np.abs(a.frames - b.frames).mean() < 0.03  # lossy yuv420 video


def test_cache_roundtrip_and_resume(sim_set, tmp_path):
    studies = ingest_manifest(sim_set, IngestConfig(clip_len=8))
    write_cache(studies, tmp_path / "c")
    back = list(iter_cache(tmp_path / "c"))
    assert [s.key for s in back] == [s.key for s in studies]
    for s, b in zip(studies, back, strict=True):
        assert (b.labels, b.reasoning, b.report, b.split) == (s.labels, s.reasoning, s.report,
                                                              s.split)
        for c, d in zip(s.clips, b.clips, strict=True):
            assert d.frames.dtype == np.float32 and d.frames.shape == c.frames.shape
            assert np.abs(d.frames - c.frames).max() <= 0.5 / 255 + 1e-6
            assert (d.view, d.ed_index, d.es_index, d.source) == (c.view, c.ed_index,
                                                                  c.es_index, c.source)
            assert d.cm_per_px == pytest.approx(c.cm_per_px)
            assert d.boxes == [{k: pytest.approx(v, abs=1e-3) for k, v in f.items()}
                               for f in c.boxes]
    split = studies[0].split
    assert all(s.split == split for s in iter_cache(tmp_path / "c", split=split))
    # resume: an interrupted run left a shard without index entry -> picked up, not rewritten
    (tmp_path / "c" / "index.json").unlink()
    with CacheWriter(tmp_path / "c") as w:
        assert w.has(studies[0].key) and not w.add(studies[0])
    assert len(read_index(tmp_path / "c")["studies"]) == len(studies)
    assert not list((tmp_path / "c").rglob("*.tmp*"))
