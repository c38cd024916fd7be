"""Write a clip as a multi-frame Ultrasound DICOM (and optionally MP4).

Ultrasound Multi-frame Image Storage (1.2.840.10008.5.1.4.1.1.3.1), explicit VR little endian,
uncompressed. MONOCHROME2 for B-mode, RGB (PlanarConfiguration 0) for colour Doppler. A Sequence
of Ultrasound Regions with one region: the sector bounding box, cm per pixel in X and Y
(PhysicalUnits 3 = cm) and the transducer position as reference pixel. Identifiers are
deliberately fake ("SIMULATED^PATIENT^0007") so de-identification can be tested: ingest must
strip PatientName, PatientID, PatientBirthDate and InstitutionName.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SOP_CLASS_US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def uid_for(*parts: object) -> str:
    """Deterministic valid UID from ``parts`` (pydicom's hash-based generator)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["echosim", *[str(p) for p in parts]]))


def write_dicom(path: str | Path, frames: np.ndarray, meta: dict[str, Any], *, study_uid: str,
                series_uid: str, sop_uid: str, patient_no: int, view: str,
                series_number: int) -> None:
    """Write ``frames`` (uint8 ``[T, H, W]`` or ``[T, H, W, 3]``) with ``meta`` from
    :func:`echosonar.simulate.render.render_clip`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    color = frames.ndim == 4
    T, H, W = frames.shape[:3]
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = SOP_CLASS_US_MULTIFRAME
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = uid_for("implementation")
    fm.ImplementationVersionName = "ECHOSIM_1"
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = SOP_CLASS_US_MULTIFRAME
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "US"
    ds.Manufacturer = "EchoSim"
    ds.ManufacturerModelName = "EchoSim virtual scanner"
    ds.InstitutionName = "SIMULATED HOSPITAL (FAKE)"
    ds.PatientName = f"SIMULATED^PATIENT^{patient_no:04d}"
    ds.PatientID = f"SIM{patient_no:07d}"
    ds.PatientBirthDate = "19000101"
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID = f"{patient_no % 100000}"
    ds.AccessionNumber = f"FAKE{patient_no:06d}"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDescription = "EchoSim cine"          # no view name: views must be classified
    ds.ImageType = ["ORIGINAL", "PRIMARY", "", "0011" if color else "0001"]
    ds.NumberOfFrames = T
    ds.FrameTime = f"{1000.0 / meta['fps']:.3f}"
    ds.CineRate = int(round(meta["fps"]))
    ds.RecommendedDisplayFrameRate = int(round(meta["fps"]))
    ds.FrameIncrementPointer = (0x0018, 0x1063)      # FrameTime
    ds.HeartRate = int(round(meta.get("heart_rate_bpm", 0)))
    ds.TransducerFrequency = int(round(meta.get("probe_mhz", 3.0) * 1000))
    ds.Rows, ds.Columns = H, W
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    x0, y0, x1, y1 = meta["sector"]["bbox"]
    region = Dataset()
    region.RegionSpatialFormat = 1                   # 2D
    region.RegionDataType = 2 if color else 1        # colour flow / tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = int(x0)
    region.RegionLocationMinY0 = int(y0)
    region.RegionLocationMaxX1 = int(x1)
    region.RegionLocationMaxY1 = int(y1)
    region.PhysicalUnitsXDirection = 3               # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = float(meta["cm_per_px"])
    region.PhysicalDeltaY = float(meta["cm_per_px"])
    ax, ay = meta["sector"]["apex"]
    region.ReferencePixelX0 = int(round(ax - x0))
    region.ReferencePixelY0 = int(round(ay - y0))
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = frames.tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> None:
    """Write an H.264 (fallback MPEG-4) MP4 copy of a clip with PyAV."""
    import av

    frames = np.asarray(frames, np.uint8)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    T, H, W, _ = frames.shape
    # yuv420p needs even sizes
    He, We = H + H % 2, W + W % 2
    if (He, We) != (H, W):
        frames = np.pad(frames, ((0, 0), (0, He - H), (0, We - W), (0, 0)))
    from fractions import Fraction

    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height, stream.pix_fmt = We, He, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
