"""DICOM reader: header sanity checks before decoding, pydicom decoding to RGB/grey uint8,
frame timing, ultrasound region and physical spacing.

Colour: pydicom >= 3 returns RGB for YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT (``as_rgb``
is its default, and for JPEG baseline it knows whether the codec already converted). We therefore
never call ``convert_color_space`` on its output — doing so is the classic double conversion that
turns grey B-mode pink. Palette colour goes through ``apply_color_lut``; MONOCHROME1 is inverted.

MPEG-2 / H.264 / HEVC transfer syntaxes (common in echo exports) carry a video bit stream in the
encapsulated fragments; it is decoded with PyAV.
"""

from __future__ import annotations

import io
import logging
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.config.ingest import IngestConfig
from echosonar.ingest.errors import (
    CodecError,
    CorruptFileError,
    FrameCountError,
    HeaderError,
    IngestError,
    ModalityError,
    NotImageError,
    NotSupportedFileError,
    PixelValueError,
    SizeError,
)
from echosonar.ingest.raw import RawClip, pixel_hash, salted_hash

US_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1",  # US image / multi-frame
    "1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3",  # retired variants
    "1.2.840.10008.5.1.4.1.1.6.2",  # enhanced US volume
})
PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422",
                         "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR"})
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
CM = 3  # RegionPhysicalUnits code for centimetres
_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom's warnings and log lines: they can quote header values (PHI)."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _code(value: Any) -> str:
    """A defined-term code safe to print (modality, photometric), else a placeholder."""
    s = str(value or "").strip().upper()
    return s if _CODE.match(s) else "<unprintable>"


def read_dicom(path: Path, cfg: IngestConfig, has_preamble: bool = True) -> RawClip:
    """Read and decode one DICOM file (see module docstring). Raises only ``IngestError``s."""
    import pydicom

    with quiet():
        try:
            ds = pydicom.dcmread(str(path), force=not has_preamble)
        except MemoryError:
            raise SizeError(path, "header declares more data than fits in memory") from None
        except Exception as e:  # noqa: BLE001 - any parser failure means a damaged file
            if not has_preamble:
                raise NotSupportedFileError(path, "not a DICOM file (no DICM preamble) and not "
                                                  "a supported video") from None
            raise CorruptFileError(path, f"cannot parse DICOM ({type(e).__name__})") from None
        if not any(t in ds for t in (0x00080016, 0x00080060, 0x0020000D, 0x7FE00010)):
            if has_preamble:
                raise CorruptFileError(path, "DICM preamble but no readable DICOM elements")
            raise NotSupportedFileError(path, "not a DICOM file (no DICM preamble, no DICOM "
                                              "tags) and not a supported video")
        try:
            return _read(ds, path, cfg)
        except IngestError:
            raise
        except MemoryError:
            raise SizeError(path, "pixel data does not fit in memory") from None
        except Exception as e:  # noqa: BLE001 - last line of defence against damaged headers
            raise CorruptFileError(path, f"damaged DICOM ({type(e).__name__})") from None


def _num(ds: Any, name: str, path: Path, default: Any = None, kind: type = int) -> Any:
    v = ds.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        return default
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        v = v[0] if len(v) else default
        if v is None:
            return default
    try:
        out = kind(float(v)) if kind is int else kind(v)
    except (TypeError, ValueError, OverflowError):
        raise HeaderError(path, f"{name} is not a number") from None
    if kind is float and not math.isfinite(out):
        raise HeaderError(path, f"{name} is NaN or infinite")
    return out


def _read(ds: Any, path: Path, cfg: IngestConfig) -> RawClip:
    if not any(k in ds for k in PIXEL_KEYWORDS):
        raise NotImageError(path, "no pixel data (not an image object)")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    allowed = {m.upper() for m in cfg.allowed_modalities}
    if modality and modality not in allowed:
        raise ModalityError(path, f"modality {_code(modality)} is not in allowed_modalities "
                                  f"{sorted(allowed)}")
    if not modality and str(ds.get("SOPClassUID", "")) not in US_SOP_CLASSES:
        raise ModalityError(path, "no Modality and the SOP class is not ultrasound")

    rows, cols = _num(ds, "Rows", path), _num(ds, "Columns", path)
    if rows is None or cols is None:
        raise CorruptFileError(path, "image without Rows/Columns")
    for name, v in (("rows", rows), ("columns", cols)):
        if not cfg.min_side <= v <= cfg.max_side:
            raise SizeError(path, f"{v} {name}, outside [{cfg.min_side}, {cfg.max_side}]")
    n = _num(ds, "NumberOfFrames", path, default=1)
    if n <= 0:
        raise FrameCountError(path, "zero frames")
    if n > cfg.max_frames:
        raise SizeError(path, f"{n} frames, above max_frames={cfg.max_frames}")
    if n < cfg.min_frames:
        raise FrameCountError(path, f"{n} frame(s): a still image, not a cine (set "
                                    f"ingest.min_frames=1 to accept stills)")
    spp = _num(ds, "SamplesPerPixel", path, default=1)
    bits = _num(ds, "BitsAllocated", path, default=8)
    if spp not in (1, 3):
        raise PixelValueError(path, f"SamplesPerPixel={spp} (expected 1 or 3)")
    if bits not in (8, 16, 32, 64):
        raise PixelValueError(path, f"BitsAllocated={bits} is not supported")
    mb = n * rows * cols * spp * bits / 8 / 2**20
    if mb > cfg.max_decoded_mb:
        raise SizeError(path, f"decoded pixels would take {mb:.0f} MiB, above max_decoded_mb")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric not in PHOTOMETRIC:
        raise PixelValueError(path, f"photometric interpretation {_code(photometric)} "
                                    "is not supported")

    frames = _decode(ds, path, cfg, n, rows, cols, spp, photometric)
    warn: list[str] = []
    if frames.shape[0] < n and _is_mpeg(ds):  # header counts more frames than the stream has
        warn.append(f"video stream holds {frames.shape[0]} of {n} frames")
        n = frames.shape[0]
        if n < cfg.min_frames:
            raise FrameCountError(path, f"the DICOM video stream holds {n} frame(s)")
    if frames.shape[1:3] != (rows, cols) or frames.shape[0] != n:
        raise CorruptFileError(path, f"decoded shape {tuple(frames.shape)} does not match the "
                                     f"header ({n} x {rows} x {cols})")
    region, spacing = _region(ds, path, rows, cols, warn)
    hr = _num(ds, "HeartRate", path, kind=float)
    uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    sop = str(ds.get("SOPInstanceUID", "") or "").strip()
    return RawClip(
        frames=frames, frame_times=_frame_times(ds, path, n, cfg, warn), source=path.name,
        study_key=salted_hash(uid, cfg.salt) if uid else None,
        instance_key=salted_hash(sop, cfg.salt) if sop else None,
        pixel_hash=pixel_hash(frames), region=region, spacing=spacing,
        heart_rate=hr if hr is not None and 20 <= hr <= 300 else None,
        order=(_num(ds, "SeriesNumber", path, 0) or 0, _num(ds, "InstanceNumber", path, 0) or 0,
               path.name),
        warnings=warn)


def _decode(ds: Any, path: Path, cfg: IngestConfig, n: int, rows: int, cols: int, spp: int,
            photometric: str) -> np.ndarray:
    """Decoded pixels as uint8 ``[N, H, W, C]`` (C = 3 RGB or 1 grey)."""
    from pydicom.pixels import apply_color_lut, get_decoder
    from pydicom.pixels.utils import get_expected_length
    from pydicom.uid import UID, MPEGTransferSyntaxes

    ts = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2"))
    ts_name = ts.name if ts.is_transfer_syntax else "an unknown transfer syntax"
    if ts in MPEGTransferSyntaxes:
        return _decode_mpeg(ds, path, n, rows, cols)
    if not ts.is_transfer_syntax:
        raise CodecError(path, "unknown (private) transfer syntax: no decoder")
    if ts.is_compressed:
        try:
            decoder = get_decoder(ts)
        except NotImplementedError:
            raise CodecError(path, f"no decoder for {ts_name}") from None
        if not decoder.is_available:
            raise CodecError(path, f"{ts_name} needs a decoder plugin that is not installed "
                                   "(pylibjpeg-openjpeg / pylibjpeg-libjpeg / Pillow)")
    elif "PixelData" in ds:
        need = get_expected_length(ds, unit="bytes")
        have = len(ds.PixelData)
        if have < need:
            raise CorruptFileError(path, f"pixel data truncated ({have} of {need} bytes)")
    try:
        arr = _pixel_array(ds, ts, cfg.jpeg_plugin)
    except MemoryError:
        raise SizeError(path, "pixel data does not fit in memory") from None
    except Exception as e:  # noqa: BLE001 - decoder failures come in many types
        raise CodecError(path, f"cannot decode {ts_name} pixel data ({type(e).__name__})") \
            from None
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:  # noqa: BLE001
            raise PixelValueError(path, f"bad palette lookup table ({type(e).__name__})") \
                from None
        spp = 3
    arr = np.asarray(arr)
    # Canonical [N, H, W, C]: pydicom drops the frame axis for one frame, the sample axis for grey
    if spp == 1 and arr.ndim == (3 if n > 1 else 2):
        arr = arr[..., None]
    if n == 1 and arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise CorruptFileError(path, f"decoded pixels have shape {arr.shape}")
    return _to_uint8(arr, ds, path, photometric)


def _pixel_array(ds: Any, ts: Any, plugin: str) -> np.ndarray:
    """``ds.pixel_array`` (pydicom >= 3: YBR* already converted to RGB, ``as_rgb`` default).

    For 8-bit JPEG the preferred plugin (Pillow: colour conversion in C, ~30% faster here) is
    tried first, pydicom's default order if it fails.
    """
    from pydicom.uid import JPEGBaseline8Bit

    if plugin and ts == JPEGBaseline8Bit:
        try:
            ds.pixel_array_options(decoding_plugin=plugin)
            return ds.pixel_array
        except Exception:  # noqa: BLE001 - fall back to the default plugin order
            ds.pixel_array_options(decoding_plugin="")
    return ds.pixel_array


def _to_uint8(arr: np.ndarray, ds: Any, path: Path, photometric: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise PixelValueError(path, "pixel data contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo + 1e-12) * 255.0
    elif arr.dtype != np.uint8:
        if photometric == "PALETTE COLOR":
            desc = ds.get("RedPaletteColorLookupTableDescriptor", [0, 0, 16])
            depth = int(desc[2]) if len(desc) > 2 and int(desc[2]) in (8, 16) else 16
            arr = arr.astype(np.float64) / (2**depth - 1) * 255.0
        else:
            stored = int(ds.get("BitsStored", 8 * arr.dtype.itemsize) or 8)
            lo = -(2 ** (stored - 1)) if arr.dtype.kind == "i" else 0
            arr = (arr.astype(np.float64) - lo) / (2**stored - 1) * 255.0
    out = np.clip(np.rint(arr), 0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
    if photometric == "MONOCHROME1":
        out = 255 - out
    return np.ascontiguousarray(out)


def _decode_mpeg(ds: Any, path: Path, n: int, rows: int, cols: int) -> np.ndarray:
    """MPEG-2 / H.264 / HEVC in DICOM: concatenate the fragments and decode them with PyAV."""
    import av
    from pydicom.encaps import generate_fragments

    try:
        stream = b"".join(generate_fragments(ds.PixelData))
    except Exception as e:  # noqa: BLE001
        raise CorruptFileError(path, f"broken encapsulated video ({type(e).__name__})") from None
    frames = []
    try:
        with av.open(io.BytesIO(stream)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= n:
                    break
    except Exception as e:  # noqa: BLE001 - PyAV raises many error types
        raise CodecError(path, f"cannot decode the DICOM video stream ({type(e).__name__})") \
            from None
    if not frames:
        raise FrameCountError(path, "the DICOM video stream has zero frames")
    arr = np.stack(frames)
    if arr.shape[1:3] != (rows, cols):
        raise CorruptFileError(path, "DICOM video frame size does not match Rows/Columns")
    return arr


def _is_mpeg(ds: Any) -> bool:
    from pydicom.uid import MPEGTransferSyntaxes

    return str(getattr(ds.file_meta, "TransferSyntaxUID", "")) in MPEGTransferSyntaxes


def _frame_times(ds: Any, path: Path, n: int, cfg: IngestConfig, warn: list[str]) -> np.ndarray:
    """Seconds from the first frame: FrameTimeVector > FrameTime > CineRate > display rate."""
    if n == 1:
        return np.zeros(1)
    ftv = ds.get("FrameTimeVector")
    if ftv is not None and len(ftv) in (n, n - 1):
        try:
            inc = np.asarray([float(v) for v in ftv], dtype=np.float64) / 1000.0
        except (TypeError, ValueError):
            raise HeaderError(path, "FrameTimeVector is not numeric") from None
        if len(inc) == n:
            inc = inc[1:]  # the first entry is the (zero) offset of frame 1
        if not np.isfinite(inc).all() or (inc <= 0).any():
            raise HeaderError(path, "FrameTimeVector has NaN, negative or zero increments")
        times = np.concatenate([[0.0], np.cumsum(inc)])
        dt = float(np.median(inc))
    else:
        ms = _num(ds, "FrameTime", path, kind=float)
        fps = None
        if ms is not None:
            if ms <= 0:
                raise HeaderError(path, "FrameTime must be a positive number of milliseconds")
            fps = 1000.0 / ms
        else:
            for name in ("CineRate", "RecommendedDisplayFrameRate"):
                fps = _num(ds, name, path, kind=float)
                if fps is not None:
                    if fps <= 0:
                        raise HeaderError(path, f"{name} must be positive")
                    break
            if fps is None:
                fps = cfg.default_fps
                warn.append(f"no frame timing in header; assumed {cfg.default_fps:g} fps")
        dt = 1.0 / fps
        times = np.arange(n, dtype=np.float64) * dt
    if not 1 / 2000 <= dt <= 2.0:
        raise HeaderError(path, f"implausible frame interval {dt * 1000:.3g} ms")
    return times


def _region(ds: Any, path: Path, rows: int, cols: int,
            warn: list[str]) -> tuple[tuple[int, int, int, int] | None, tuple[float, float] | None]:
    """The largest 2-D ultrasound region (end-exclusive box) and its cm-per-pixel spacing.

    Vendors disagree with themselves: some store region coordinates of the acquisition grid
    while the pixels were downsampled (pydicom's SonoSite example: a 640x480 region in a 320x240
    image), some put the last column at ``Columns``. Both axes beyond the image by a common
    integer factor -> rescale coordinates and spacing by it; otherwise clip to the image.
    """
    best, best_area = None, 0
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        if int(item.get("RegionSpatialFormat", 0) or 0) != 1:  # 1 = 2-D tissue/flow image
            continue
        try:
            box = [int(item[k].value) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                 "RegionLocationMaxX1", "RegionLocationMaxY1")]
        except (KeyError, TypeError, ValueError):
            warn.append("ultrasound region without a complete location; ignored")
            continue
        area = (box[2] - box[0]) * (box[3] - box[1])
        if area > best_area:
            best, best_area = (item, box), area
    spacing = None
    if best is None:
        ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        if ps is not None and len(ps) == 2:
            dy, dx = (float(v) / 10.0 for v in ps)  # mm -> cm; DICOM order is (row, column)
            if not (math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0):
                raise HeaderError(path, "PixelSpacing is NaN, negative or zero")
            spacing = (dx, dy)
            warn.append("no ultrasound region; spacing from PixelSpacing")
        return None, spacing
    item, (x0, y0, x1, y1) = best
    if int(item.get("PhysicalUnitsXDirection", 0) or 0) == CM and \
            int(item.get("PhysicalUnitsYDirection", 0) or 0) == CM:
        dx = float(item.get("PhysicalDeltaX", float("nan")))
        dy = float(item.get("PhysicalDeltaY", float("nan")))
        if not (math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0):
            raise HeaderError(path, "ultrasound region has a NaN, negative or zero physical delta")
        spacing = (dx, dy)
    else:
        warn.append("ultrasound region is not in centimetres; no physical spacing")
    if x1 < x0 or y1 < y0:
        warn.append("ultrasound region has inverted corners; ignored")
        return None, spacing
    if x1 > cols and y1 > rows:
        k = next((k for k in range(2, 9) if x1 <= cols * k and y1 <= rows * k), None)
        if k is not None:
            x0, y0, x1, y1 = x0 / k, y0 / k, x1 / k, y1 / k
            spacing = (spacing[0] * k, spacing[1] * k) if spacing else None
            warn.append(f"ultrasound region given on a {k}x pixel grid; rescaled to the image")
    if x1 >= cols or y1 >= rows:
        if x1 > cols or y1 > rows:
            warn.append("ultrasound region extends beyond the image; clipped")
        x1, y1 = min(x1, cols - 1), min(y1, rows - 1)
    box = (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
           int(math.ceil(x1)) + 1, int(math.ceil(y1)) + 1)  # DICOM max corner is inclusive
    if box[2] - box[0] < 16 or box[3] - box[1] < 16:
        warn.append("ultrasound region is too small; ignored")
        return None, spacing
    return box, spacing
