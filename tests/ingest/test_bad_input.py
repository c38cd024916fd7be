"""Bad input: each kind gives its own IngestError naming the file; the rest of a study ingests;
mutated DICOM bytes never raise anything but IngestError."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from echosonar.config.ingest import IngestConfig
from echosonar.ingest import errors as E
from echosonar.ingest import ingest_paths, preprocess, read_file
from echosonar.ingest.raw import source_label


def _edit(path, **changes):
    ds = pydicom.dcmread(path)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path


@pytest.fixture
def good(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=4, h=48, w=64)
    return dicom_factory(tmp_path / "good.dcm", frames, region=(4, 0, 59, 47))


def _case(name, tmp_path, good, dicom_factory, fan):
    """Build bad file ``name``; return (path, expected error class, cfg)."""
    cfg = IngestConfig()
    p = tmp_path / f"{name}.dcm"
    data = good.read_bytes()
    if name == "truncated":
        p.write_bytes(data[: int(len(data) * 0.6)])
        return p, E.CorruptFileError, cfg
    if name == "garbage_after_preamble":
        p.write_bytes(data[:132] + np.random.default_rng(0).bytes(3000))
        return p, E.CorruptFileError, cfg
    if name == "non_image":
        shutil.copy(get_testdata_file("reportsi.dcm"), p)
        return p, E.NotImageError, cfg
    if name == "non_ultrasound":
        shutil.copy(get_testdata_file("CT_small.dcm"), p)
        return p, E.ModalityError, cfg
    shutil.copy(good, p)
    if name == "zero_frames":
        return _edit(p, NumberOfFrames=0), E.FrameCountError, cfg
    if name == "single_frame":
        frames, _ = fan(n=1, h=48, w=64)
        return dicom_factory(p, frames), E.FrameCountError, cfg
    if name == "absurd_rows":
        return _edit(p, Rows=60000), E.SizeError, cfg
    if name == "absurd_frames":
        return _edit(p, NumberOfFrames=10**6), E.SizeError, cfg
    if name == "file_too_large":
        return p, E.SizeError, IngestConfig(max_file_mb=0.001)
    if name == "unknown_codec":
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
        ds.save_as(p)
        return p, E.CodecError, cfg
    if name == "damaged_jpeg":
        frames, _ = fan(n=3, h=48, w=64)
        dicom_factory(p, frames, syntax="jpeg")
        ds = pydicom.dcmread(p)
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8\xff\xdb" + b"\x13" * 200] * 3)
        ds.save_as(p)
        return p, E.CodecError, cfg
    if name == "unsupported_photometric":
        return _edit(p, PhotometricInterpretation="CMYK"), E.PixelValueError, cfg
    if name == "nan_frame_time":
        return _edit(p, FrameTime="NaN"), E.HeaderError, cfg
    if name == "nan_spacing":
        ds = pydicom.dcmread(p)
        ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX = float("nan")
        ds.save_as(p)
        return p, E.HeaderError, cfg
    if name == "nan_float_pixels":
        ds = pydicom.dcmread(p)
        del ds.PixelData
        arr = np.random.default_rng(0).random((4, 48, 64)).astype(np.float32)
        arr[1, 5, 5] = np.nan
        ds.BitsAllocated, ds.BitsStored = 32, 32
        del ds.HighBit
        del ds.PixelRepresentation
        ds.FloatPixelData = arr.tobytes()
        ds.save_as(p)
        return p, E.PixelValueError, cfg
    if name == "text_file":
        p.write_text("Patient: nobody. This is not an image.\n" * 20)
        return p, E.NotSupportedFileError, cfg
    if name == "empty_file":
        p.write_bytes(b"")
        return p, E.NotSupportedFileError, cfg
    if name == "png_image":
        from PIL import Image

        Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "x.png")
        shutil.copy(tmp_path / "x.png", p)
        return p, E.NotSupportedFileError, cfg
    if name == "broken_video":
        v = tmp_path / "broken_video.mp4"
        v.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
        return v, E.CorruptFileError, cfg
    raise AssertionError(name)


CASES = ["truncated", "garbage_after_preamble", "non_image", "non_ultrasound", "zero_frames",
         "single_frame", "absurd_rows", "absurd_frames", "file_too_large", "unknown_codec",
         "damaged_jpeg", "unsupported_photometric", "nan_frame_time", "nan_spacing",
         "nan_float_pixels", "text_file", "empty_file", "png_image", "broken_video"]


@pytest.mark.parametrize("name", CASES)
def test_specific_error(name, tmp_path, good, dicom_factory, fan):
    path, cls, cfg = _case(name, tmp_path, good, dicom_factory, fan)
    with pytest.raises(E.IngestError) as info:
        read_file(path, cfg)
    err = info.value
    assert type(err) is cls, f"{name}: got {type(err).__name__}: {err}"
    assert str(err).startswith(path.name + ": ") and str(tmp_path) not in str(err)
    assert err.file == path.name and len(err.reason) > 5


def test_single_frame_accepted_when_configured(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=1, h=48, w=64)
    cfg = IngestConfig(min_frames=1, clip_len=4)
    clip = preprocess(read_file(dicom_factory(tmp_path / "still.dcm", frames), cfg), cfg)
    assert clip.frames.shape[0] == 4 and np.ptp(clip.frames, axis=0).max() == 0


def test_study_survives_bad_files_and_skips_duplicates(tmp_path, dicom_factory, fan):
    d = tmp_path / "in"
    d.mkdir()
    f1, _ = fan(n=4, h=48, w=64, seed=1)
    f2, _ = fan(n=4, h=48, w=64, seed=2)
    f3, _ = fan(n=4, h=48, w=64, seed=3)
    dicom_factory(d / "b_second.dcm", f2, sop_uid="1.2.3.2", extra={"InstanceNumber": 2})
    dicom_factory(d / "a_first.dcm", f1, sop_uid="1.2.3.1", extra={"InstanceNumber": 1})
    dicom_factory(d / "c_other.dcm", f3, sop_uid="1.2.3.3", study_uid="1.2.9")
    shutil.copy(d / "a_first.dcm", d / "d_copy.dcm")  # same SOP instance
    dicom_factory(d / "e_same_pixels.dcm", f2, sop_uid="1.2.3.9")  # new SOP, same pixels
    (d / "notes.txt").write_text("not an image")
    raw = (d / "a_first.dcm").read_bytes()
    (d / "f_truncated.dcm").write_bytes(raw[: len(raw) // 2])
    shutil.copy(get_testdata_file("CT_small.dcm"), d / "g_ct.dcm")
    order = sorted(p.name for p in d.iterdir())
    for workers, keep in ((1, True), (2, False)):
        cfg = IngestConfig(clip_len=4, keep_source_names=keep)
        studies, skipped = ingest_paths(d, cfg, workers=workers)

        def name(f, keep=keep, cfg=cfg):  # basename, or position + salted hash (the default)
            return f if keep else source_label(d / f, cfg.salt, order.index(f))

        assert len(studies) == 2
        by_n = sorted(studies, key=lambda s: -len(s.clips))
        assert [c.source for c in by_n[0].clips] == [name("a_first.dcm"), name("b_second.dcm")]
        assert [c.source for c in by_n[1].clips] == [name("c_other.dcm")]
        reasons = dict(skipped)
        assert set(reasons) == {name(f) for f in ("d_copy.dcm", "e_same_pixels.dcm",
                                                  "notes.txt", "f_truncated.dcm", "g_ct.dcm")}
        assert reasons[name("d_copy.dcm")].startswith(f"duplicate of {name('a_first.dcm')}")
        assert reasons[name("e_same_pixels.dcm")].startswith(
            f"duplicate of {name('b_second.dcm')}")
        assert "modality CT" in reasons[name("g_ct.dcm")]
        if not keep:
            assert name("g_ct.dcm").startswith("file #7 [") and ".dcm" not in repr(skipped)


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # flip bytes anywhere
        for i in rng.integers(0, len(b), rng.integers(1, 40)):
            b[i] = int(rng.integers(256))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(1, len(b)))]
    elif kind == 2:  # delete a chunk
        i = int(rng.integers(len(b)))
        del b[i:i + int(rng.integers(1, 400))]
    elif kind == 3:  # duplicate a chunk
        i = int(rng.integers(len(b)))
        b[i:i] = b[i:i + int(rng.integers(1, 400))]
    elif kind == 4:  # corrupt the header area (tags, VRs, lengths)
        for i in rng.integers(128, min(len(b), 1200), rng.integers(1, 12)):
            b[i] = int(rng.integers(256))
    else:  # huge length field
        i = int(rng.integers(132, min(len(b) - 4, 1200)))
        b[i:i + 4] = b"\xff\xff\xff\x7f"
    return bytes(b)


def test_fuzz_mutated_dicoms_raise_only_ingest_errors(tmp_path, dicom_factory, fan):
    grey, _ = fan(n=3, h=40, w=48)
    col, _ = fan(n=3, h=40, w=48, color=True)
    bases = [dicom_factory(tmp_path / "n.dcm", grey, region=(2, 0, 45, 39)),
             dicom_factory(tmp_path / "j.dcm", col, "YBR_FULL_422", "jpeg"),
             dicom_factory(tmp_path / "r.dcm", col, syntax="rle")]
    rng = np.random.default_rng(1234)
    cfg = IngestConfig(clip_len=4, image_size=32)
    outcomes: dict[str, int] = {}
    p = tmp_path / "mutant.dcm"
    for base in bases:
        data = base.read_bytes()
        for _ in range(120):
            p.write_bytes(_mutate(data, rng))
            try:
                clip = preprocess(read_file(p, cfg), cfg)
            except E.IngestError as e:
                assert str(e).startswith("mutant.dcm: ")
                outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
                continue
            assert np.isfinite(clip.frames).all()
            assert clip.frames.min() >= 0 and clip.frames.max() <= 1
            outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert outcomes.get("ok", 0) > 0 and len(outcomes) >= 3, outcomes


def test_cli_reports_missing_source_and_all_skipped(tmp_path, capsys):
    from echosonar.cli import main

    assert main(["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    (tmp_path / "junk.txt").write_text("hello")
    assert main(["ingest", str(tmp_path / "junk.txt"), "--out", str(tmp_path / "c")]) == 1
    out = capsys.readouterr()
    assert "file #1 [" in out.out and "not a DICOM file" in out.out and "no such file" in out.err
    assert "junk" not in out.out
    assert main(["ingest", str(tmp_path / "junk.txt"), "--out", str(tmp_path / "c"),
                 "--keep-source-names"]) == 1
    assert "junk.txt: not a DICOM file" in capsys.readouterr().out


def test_invalid_settings_are_refused(tmp_path, capsys):
    from echosonar.cli import main

    with pytest.raises(ValueError, match="temporal_window"):
        ingest_paths(tmp_path, IngestConfig(temporal_window="beat"))
    assert main(["ingest", str(tmp_path), "--out", str(tmp_path / "c"),
                 "--set", "ingest.cache_dtype=int4"]) == 2
    assert "cache_dtype" in capsys.readouterr().err
