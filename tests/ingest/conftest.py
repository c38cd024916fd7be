"""Builders for small, realistic ultrasound DICOMs and videos (pydicom + Pillow + PyAV).

``make_dicom`` writes a US multi-frame object with rich PHI in its header (so de-identification
can be checked), a Sequence of Ultrasound Regions, frame timing, and pixel data in one of several
photometric interpretations and transfer syntaxes. ``fan_frames`` draws a moving speckle fan with
burned-in static text and an ECG-like trace outside it, like a scanner screen.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PHI = {
    "PatientName": "Doe^Janet^Quincy", "PatientID": "MRN-99887766", "PatientBirthDate": "19610214",
    "InstitutionName": "St Elsewhere General Hospital", "AccessionNumber": "ACC20240917X",
    "ReferringPhysicianName": "House^Gregory", "StudyDate": "20240917", "StudyTime": "101112",
    "OperatorsName": "Sonographer^Sally", "StationName": "ECHO-LAB-ROOM-7",
    "OtherPatientIDs": "ALT-55443322", "StudyDescription": "TTE Janet Doe follow-up",
}


def fan_frames(n: int = 12, h: int = 96, w: int = 128, seed: int = 0, color: bool = False,
               text: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Moving speckle in a sector (apex top centre) + static text/ECG outside it.

    Returns ``(frames uint8 [n, h, w] or [n, h, w, 3], sector mask bool [h, w])``.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] + 0.5
    ax, ay, r, half = w / 2, 4.0, h * 0.85, 38.0
    ang = np.degrees(np.arctan2(np.abs(x - ax), y - ay))
    sector = (np.hypot(x - ax, y - ay) <= r) & (ang <= half) & (y >= ay)
    frames = np.zeros((n, h, w), np.float32)
    for t in range(n):
        speck = rng.gamma(1.0, 60.0, (h, w)) + 30 * np.sin(0.3 * y + t)
        frames[t] = np.clip(speck, 3, 255) * sector
    if text:  # static burned-in annotations outside the sector
        frames[:, 2:9, 3:30] = 255  # "patient name" block top-left
        frames[:, 2:8, w - 26:w - 3] = 200  # vendor logo top-right
        ecg = (h - 6 + 3 * np.sin(np.linspace(0, 12, w))).astype(int)
        frames[:, ecg, np.arange(w)] = 220  # ECG trace along the bottom
    out = np.clip(frames, 0, 255).astype(np.uint8)
    if color:
        rgb = np.repeat(out[..., None], 3, axis=-1)
        rgb[:, h // 3:h // 2, w // 2 - 10:w // 2 + 10] = [220, 30, 20]  # a red jet in the sector
        rgb[:, h // 2:h // 2 + 8, w // 2 - 6:w // 2 + 6] = [20, 40, 230]
        return rgb, sector
    return out, sector


def _jpeg(frame: np.ndarray, subsampling: int) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(frame).save(b, format="JPEG", quality=95, subsampling=subsampling)
    return b.getvalue()


def _j2k(frame: np.ndarray) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(frame).save(b, format="JPEG2000", irreversible=False, no_jp2=True)
    return b.getvalue()


def _ybr422_bytes(rgb: np.ndarray) -> bytes:
    """Native YBR_FULL_422: per pair of pixels Y1 Y2 Cb Cr (chroma averaged)."""
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.float32)
    y = ybr[..., 0]
    cb = 0.5 * (ybr[..., 0::2, 1] + ybr[..., 1::2, 1])
    cr = 0.5 * (ybr[..., 0::2, 2] + ybr[..., 1::2, 2])
    out = np.stack([y[..., 0::2], y[..., 1::2], cb, cr], -1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).tobytes()


def make_dicom(path: str | Path, frames: np.ndarray, photometric: str | None = None,
               syntax: str = "explicit", frame_time_ms: float | None = 33.3,
               region: tuple[int, int, int, int] | None = None, delta_cm: float = 0.05,
               study_uid: str = "1.2.826.0.1.3680043.8.498.1111111111", sop_uid: str | None = None,
               modality: str = "US", extra: dict[str, Any] | None = None, phi: bool = True) -> Path:
    """Write a US multi-frame DICOM. ``frames``: uint8 [N, H, W] (grey) or [N, H, W, 3] (RGB).

    ``photometric`` defaults to MONOCHROME2 / RGB; "YBR_FULL" and "YBR_FULL_422" store converted
    data (native) and, with ``syntax="jpeg"``, mark a JPEG whose codec did the conversion.
    ``syntax``: explicit | implicit | rle | jpeg (baseline) | jpeg2000.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import convert_color_space
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    path = Path(path)
    frames = np.asarray(frames, np.uint8)
    n, h, w = frames.shape[:3]
    rgb = frames.ndim == 4
    photometric = photometric or ("RGB" if rgb else "MONOCHROME2")
    ts = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
          "rle": RLELossless, "jpeg": JPEGBaseline8Bit, "jpeg2000": JPEG2000Lossless}[syntax]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ts
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = study_uid + ".1"
    ds.Modality = modality
    ds.Manufacturer = "Acme Ultrasound"
    if phi:
        for k, v in PHI.items():
            setattr(ds, k, v)
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = photometric
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = n
    if frame_time_ms is not None:
        ds.FrameTime = f"{frame_time_ms:.6g}"
    if region is not None:
        item = pydicom.Dataset()
        item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
        (item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1,
         item.RegionLocationMaxY1) = region
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
        item.PhysicalDeltaX = item.PhysicalDeltaY = float(delta_cm)
        ds.SequenceOfUltrasoundRegions = [item]
    if syntax in ("explicit", "implicit"):
        if photometric == "YBR_FULL":
            data = convert_color_space(frames, "RGB", "YBR_FULL").tobytes()
        elif photometric == "YBR_FULL_422":
            data = _ybr422_bytes(frames)
        else:
            data = frames.tobytes()
        ds.PixelData = data
    elif syntax == "rle":
        ds.PixelData = frames.tobytes()
        ds.compress(RLELossless, frames, encoding_plugin="pydicom")
    elif syntax == "jpeg":
        sub = 1 if photometric == "YBR_FULL_422" else 0
        ds.PixelData = encapsulate([_jpeg(f, sub) for f in frames])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    elif syntax == "jpeg2000":
        ds.PixelData = encapsulate([_j2k(f) for f in frames])
        ds["PixelData"].VR = "OB"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def make_video(path: str | Path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4") -> Path:
    """Write RGB frames ``[N, H, W, 3]`` to an MP4/AVI with PyAV."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "mpeg4":
            s.bit_rate = 4_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture
def dicom_factory():
    return make_dicom


@pytest.fixture
def video_factory():
    return make_video


@pytest.fixture
def fan():
    return fan_frames


@pytest.fixture
def real_fixture_path() -> str:
    from pydicom.data import get_testdata_file

    return get_testdata_file("examples_ybr_color.dcm")


@pytest.fixture(scope="session")
def sim_set(tmp_path_factory) -> Path:
    """A tiny simulated set (2 studies, 64 px, 8 frames, every view, MP4 copies), made once."""
    from echosonar.config.sim import SimConfig
    from echosonar.simulate import write_study_set

    out = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(studies=2, image_size=64, frames=8, write_mp4=True, missing_view_prob=0.0,
                    seed=3)
    write_study_set(out, cfg)
    return out
