"""Readers: every photometric interpretation and transfer syntax decodes to the right RGB/grey."""

from __future__ import annotations

import numpy as np
import pytest

from echosonar.config.ingest import IngestConfig
from echosonar.ingest import read_file


def _rgb_test_frames(n: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    """Grey ramp (B-mode-like) with a saturated red and blue block (Doppler-like)."""
    ramp = np.tile(np.linspace(10, 245, w, dtype=np.float32), (h, 1))
    f = np.repeat(ramp[..., None], 3, -1)
    f[8:24, 8:24] = [200, 30, 30]
    f[8:24, 40:56] = [30, 40, 210]
    return np.stack([np.roll(f, t, axis=1) for t in range(n)]).astype(np.uint8)


def test_monochrome_multiframe_exact(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=5)
    raw = read_file(dicom_factory(tmp_path / "a.dcm", frames, frame_time_ms=20))
    assert raw.frames.shape == (5, *frames.shape[1:], 1)
    np.testing.assert_array_equal(raw.frames[..., 0], frames)
    np.testing.assert_allclose(raw.frame_times, np.arange(5) * 0.02)
    assert raw.source == "a.dcm" and raw.study_key and raw.instance_key


@pytest.mark.parametrize("photometric,syntax,tol,plugin", [
    ("RGB", "explicit", 0, ""), ("RGB", "implicit", 0, ""), ("RGB", "rle", 0, ""),
    ("YBR_FULL", "explicit", 3, ""), ("YBR_FULL_422", "explicit", 4, ""),
    ("YBR_FULL", "jpeg", 12, "pillow"), ("YBR_FULL_422", "jpeg", 12, "pillow"),
    ("YBR_FULL", "jpeg", 12, "pylibjpeg"), ("YBR_FULL_422", "jpeg", 12, "pylibjpeg"),
])
def test_color_spaces_convert_once(tmp_path, dicom_factory, photometric, syntax, tol, plugin):
    """YBR is converted to RGB exactly once (with either JPEG decoder): grey stays grey, red
    stays red."""
    src = _rgb_test_frames()
    raw = read_file(dicom_factory(tmp_path / "c.dcm", src, photometric, syntax),
                    IngestConfig(jpeg_plugin=plugin))
    got = raw.frames.astype(int)
    assert got.shape == src.shape
    grey = got[:, 30:, :]  # ramp rows, away from the colour blocks (chroma edges)
    assert np.abs(grey - src[:, 30:].astype(int)).max() <= tol
    assert (grey.max(-1) - grey.min(-1)).max() <= max(tol, 2), "grey pixels must have R=G=B"
    red = got[:, 12:20, 12:20].reshape(-1, 3).mean(0)
    assert red[0] > 170 and red[1] < 70 and red[2] < 70, red


def test_jpeg_grey_and_jpeg2000(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=3)
    raw = read_file(dicom_factory(tmp_path / "g.dcm", frames, syntax="jpeg"))
    assert raw.frames.shape[-1] == 1 and np.abs(raw.frames[..., 0].astype(int) - frames).mean() < 4
    raw2 = read_file(dicom_factory(tmp_path / "j2k.dcm", frames, syntax="jpeg2000"))
    np.testing.assert_array_equal(raw2.frames[..., 0], frames)  # lossless


def test_jpeg_lossless_matches_rle_reference(tmp_path):
    """pydicom's SC_rgb test image in JPEG lossless (SV1) and RLE decodes identically; lossy
    JPEG (YBR_FULL) is close to it — transplanted into a US object."""
    import pydicom
    from pydicom.data import get_testdata_file

    cfg = IngestConfig(min_frames=1)
    out = {}
    for name in ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.Modality = "US"
        ds.save_as(tmp_path / name)
        out[name] = read_file(tmp_path / name, cfg).frames.astype(int)
    np.testing.assert_array_equal(out["SC_rgb_jpeg_gdcm.dcm"], out["SC_rgb_rle.dcm"])
    assert np.abs(out["SC_rgb_jpeg_dcmtk.dcm"] - out["SC_rgb_rle.dcm"]).mean() < 3


def test_palette_color(tmp_path, dicom_factory):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    ds.save_as(tmp_path / "pal.dcm")
    raw = read_file(tmp_path / "pal.dcm", IngestConfig(min_frames=1))
    assert raw.frames.shape == (1, 350, 800, 3) and raw.frames.dtype == np.uint8
    # the header bar of this Philips screen is dark blue: B > R
    bar = raw.frames[0, 2:40, 200:300].reshape(-1, 3).mean(0)
    assert bar[2] > bar[0] + 20
    # region Y1 (518) is beyond the 350 rows (cropped export): clipped, not rescaled
    assert raw.region[3] <= 350 and any("clipped" in w for w in raw.warnings)
    assert raw.spacing == pytest.approx((0.026228787, 0.026228787))


def test_monochrome1_and_16bit(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=3)
    raw = read_file(dicom_factory(tmp_path / "m1.dcm", frames, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(raw.frames[..., 0], 255 - frames)
    import pydicom

    p = dicom_factory(tmp_path / "b16.dcm", frames)
    ds = pydicom.dcmread(p)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = (frames.astype(np.uint16) * 16).tobytes()
    ds.save_as(p)
    raw = read_file(p)
    assert np.abs(raw.frames[..., 0].astype(int) - frames).max() <= 1


def test_frame_timing_sources(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=4)
    p = dicom_factory(tmp_path / "ftv.dcm", frames, frame_time_ms=None,
                      extra={"FrameTimeVector": ["0", "10", "30", "20"]})
    np.testing.assert_allclose(read_file(p).frame_times, [0, 0.01, 0.04, 0.06])
    p = dicom_factory(tmp_path / "cine.dcm", frames, frame_time_ms=None, extra={"CineRate": 50})
    np.testing.assert_allclose(read_file(p).frame_times, np.arange(4) * 0.02)
    p = dicom_factory(tmp_path / "none.dcm", frames, frame_time_ms=None)
    raw = read_file(p, IngestConfig(default_fps=25))
    np.testing.assert_allclose(raw.frame_times, np.arange(4) * 0.04)
    assert any("assumed 25 fps" in w for w in raw.warnings)


def test_region_spacing_and_acquisition_grid(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=3, h=96, w=128)
    raw = read_file(dicom_factory(tmp_path / "r.dcm", frames, region=(10, 4, 117, 90),
                                  delta_cm=0.04))
    assert raw.region == (10, 4, 118, 91) and raw.spacing == (0.04, 0.04)
    # coordinates of a 2x acquisition grid (what SonoSite writes after downsampling)
    raw = read_file(dicom_factory(tmp_path / "r2.dcm", frames, region=(20, 8, 234, 180),
                                  delta_cm=0.04))
    assert raw.region == (10, 4, 118, 91) and raw.spacing == (0.08, 0.08)
    assert any("2x pixel grid" in w for w in raw.warnings)


@pytest.mark.parametrize("ext,codec", [("mp4", "mpeg4"), ("avi", "mjpeg"), ("mp4", "libx264")])
def test_video(tmp_path, video_factory, fan, ext, codec):
    frames, _ = fan(n=10, h=96, w=128, color=True)
    raw = read_file(video_factory(tmp_path / f"v.{ext}", frames, fps=25, codec=codec))
    assert raw.frames.shape == frames.shape
    np.testing.assert_allclose(raw.frame_times, np.arange(10) / 25, atol=1e-3)
    red = raw.frames[:, 36:46, 58:70].reshape(-1, 3).mean(0)
    assert red[0] > 150 and red[1] < 90 and raw.study_key is None


def test_h264_inside_dicom(tmp_path, dicom_factory, video_factory, fan):
    """MPEG-4 AVC transfer syntax: the encapsulated stream is decoded with PyAV."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG4HP41

    frames, _ = fan(n=8, h=96, w=128, color=True)
    vid = tmp_path / "s.h264"
    import av

    with av.open(str(vid), "w", format="h264") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    p = dicom_factory(tmp_path / "h264.dcm", frames, photometric="YBR_PARTIAL_420")
    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.PixelData = encapsulate([vid.read_bytes()])
    ds["PixelData"].VR = "OB"
    ds.save_as(p)
    raw = read_file(p)
    assert raw.frames.shape == frames.shape
    assert np.abs(raw.frames.astype(int) - frames).mean() < 12
