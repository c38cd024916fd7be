"""The real SonoSite A4C cine from pydicom's wheel, and proof that no header PHI leaves ingest."""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest

from echosonar.cli import main
from echosonar.config.ingest import IngestConfig
from echosonar.ingest import ingest_paths, preprocess, read_file, write_cache
from echosonar.ingest.preproc import crop_and_mask
from echosonar.ingest.raw import source_label

DELTA = 0.05104970559477806  # the region's PhysicalDeltaX/Y (cm) on its 640x480 grid


def test_real_sonosite_cine(real_fixture_path):
    raw = read_file(real_fixture_path)
    assert raw.frames.shape == (30, 240, 320, 3) and raw.frames.dtype == np.uint8
    np.testing.assert_allclose(np.diff(raw.frame_times), 0.033333, atol=1e-6)
    # region (84,31)-(595,414) is on the 2x acquisition grid of this 320x240 export
    assert raw.region == (42, 15, 299, 208)
    assert raw.spacing == pytest.approx((2 * DELTA, 2 * DELTA))
    x0, y0, x1, y1 = raw.region
    _, mask = crop_and_mask(raw, True, [])
    sub = raw.frames[:, y0:y1, x0:x1].astype(int)
    chroma = sub.max(-1) - sub.min(-1)
    # YBR_FULL_422 JPEG converted exactly once: B-mode pixels are grey (R = G = B up to JPEG
    # chroma noise). Treated as RGB, or converted twice, grey would become green/pink.
    assert np.percentile(chroma[:, mask], 99) <= 4 and chroma[:, mask].mean() < 1.0
    assert sub[:, mask].mean() > 20  # and not black
    # the fan covers about half the region; burned-in static marks inside the region box (depth
    # scale dots at x=298, the "19" cm label, the orientation dot) are outside the mask
    assert 0.35 < mask.mean() < 0.7
    static = (sub.mean(-1).std(0) == 0) & (sub.mean(-1).max(0) > 60)
    assert static.sum() > 20 and (static & mask).sum() <= 2
    clip = preprocess(raw, IngestConfig())
    assert clip.frames.shape == (16, 1, 64, 64)  # B-mode -> one channel
    assert clip.cm_per_px == pytest.approx(2 * DELTA * (x1 - x0) / 64)
    assert clip.frame_times[-1] == pytest.approx(29 / 30, abs=1e-4)
    # depth label "19" (x 288-294, y 200-204) maps to output ~(61, 46): zero in every frame
    assert clip.frames[:, 0, 45:48, 60:63].max() == 0
    assert clip.frames[:, 0, :, 63].max() == 0  # the depth-scale column


def _header_strings(ds: pydicom.Dataset) -> set[str]:
    """Every non-empty string value of the header (file meta, nested sequences, multi-values)."""
    out: set[str] = set()
    elems = list(ds.file_meta.iterall()) + list(ds.iterall())
    for el in elems:
        if el.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "UN", "US", "UL", "SS", "SL", "FL",
                     "FD", "AT", "OV", "SV", "UV"):
            continue
        vals = el.value if isinstance(el.value, (list, pydicom.multival.MultiValue)) else [
            el.value]
        for v in vals:
            s = str(v).strip()
            if s:
                out.add(s)
    return out


def _leaks(values: set[str], text: str) -> list[str]:
    """Header values found in ``text``: substring for long values, whole token for short ones."""
    tokens = set(re.findall(r"[A-Za-z0-9_^-]+", text))
    found = []
    for v in values:
        if len(v) >= 6 and v in text:
            found.append(v)
        elif 3 <= len(v) < 6 and v in tokens:
            found.append(v)
    return found


def _safetensors_header(path: Path) -> str:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return data[8:8 + n].decode()


def test_no_header_phi_in_any_output(tmp_path, real_fixture_path, dicom_factory, fan, capsys,
                                     caplog):
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(real_fixture_path, src / "clip01.dcm")
    frames, _ = fan(n=6)
    dicom_factory(src / "clip02.dcm", frames, region=(4, 0, 123, 95))
    # bad files too: their error messages and the summary are outputs as well
    data = (src / "clip01.dcm").read_bytes()
    (src / "clip03.dcm").write_bytes(data[: len(data) // 3])
    ds = pydicom.dcmread(src / "clip02.dcm")
    ds.FrameTime = "-5"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.424242"
    ds.save_as(src / "clip04.dcm")
    values = set()
    for name in ("clip01.dcm", "clip02.dcm"):
        values |= _header_strings(pydicom.dcmread(src / name))
    assert {"PLA", "204", "Doe^Janet^Quincy", "MRN-99887766", "20160503"} <= values

    cfg = IngestConfig(salt="site-salt")
    studies, skipped = ingest_paths(src, cfg)
    assert len(studies) == 2 and {f for f, _ in skipped} == {
        source_label(src / "clip03.dcm", "site-salt", 2),
        source_label(src / "clip04.dcm", "site-salt", 3)}
    uid = str(pydicom.dcmread(src / "clip01.dcm").StudyInstanceUID)
    keys = {s.key for s in studies}
    assert uid not in keys and all(re.fullmatch(r"[0-9a-f]{20}", k) for k in keys)
    other = ingest_paths(src / "clip02.dcm", IngestConfig(salt="other"))[0]
    assert len(other) == 1 and other[0].key not in keys

    texts = [repr(skipped), json.dumps([[s.key, s.warnings, s.labels, s.split] + [
        [c.view, c.source, c.cm_per_px, c.boxes, c.frame_times.tolist()] for c in s.clips]
        for s in studies])]
    cache = tmp_path / "cache"
    write_cache(studies, cache)
    assert main(["ingest", str(src), "--out", str(tmp_path / "cache2"), "--views"]) == 0
    out = capsys.readouterr()
    texts += [out.out, out.err, caplog.text]
    for root in (cache, tmp_path / "cache2"):
        for f in root.rglob("*"):
            if f.suffix == ".json":
                texts.append(f.read_text())
            elif f.suffix == ".safetensors":
                texts.append(_safetensors_header(f))
    assert "file #3 [" in out.out and "file #4 [" in out.out  # the summary lists skips
    for t in texts:
        assert not _leaks(values, t), _leaks(values, t)
        assert "clip0" not in t and str(src) not in t  # nor file or folder names
