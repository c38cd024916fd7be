"""What the view classifier, its OOD guard and the detector say on real files.

``python -m echosonar.ingest.real_check --view-classifier DIR [--detector DIR] [--json OUT]``
prints a Markdown table with one row per real ultrasound file that ships with pydicom (its test
files include a real SonoSite apical 4-chamber cine, GE lymph-node power-Doppler frames, a
Philips obstetric frame and a tiny colour test image) plus the pixel content of pydicom's
non-ultrasound images (CT, MR, ...) pushed through the ultrasound path as if their header said
US, and a synthetic CT-like slice. Each row says whether default ingest accepts the file (and
if not, why), what the view classifier says when the content is forced through, the OOD
guard's distance and level, and for clips the classifier (or the known answer) calls apical:
where the detector puts LV, RV, LA and RA and the LVEDD it measures.

:data:`KNOWN` holds the answers we know; ``tests/ingest/test_real_echo.py`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: real ultrasound in pydicom's test files: name -> (what it is, the view a reader would give)
REAL_US: dict[str, tuple[str, str]] = {
    "examples_ybr_color.dcm": ("SonoSite cine, 30 frames: apical 4-chamber", "A4C"),
    "examples_rgb_color.dcm": ("GE still: lymph node, power Doppler", "OTHER"),
    "examples_jpeg2k.dcm": ("GE still: lymph node, power Doppler (JPEG 2000)", "OTHER"),
    "examples_palette.dcm": ("Philips still: obstetric, near-empty sector", "OTHER"),
    "ExplVR_BigEnd.dcm": ("GE 60x80 colour test image (not anatomy)", "OTHER"),
}
#: non-ultrasound images whose pixels are forced through the ultrasound path
NON_US: dict[str, str] = {
    "CT_small.dcm": "CT slice, 128x128", "693_J2KI.dcm": "CT slice, 512x512",
    "MR_small.dcm": "MR slice, 64x64", "examples_overlay.dcm": "MR abdomen",
    "JPEG2000.dcm": "NM whole-body scan", "image_dfl.dcm": "secondary capture, grey",
    "SC_rgb_jpeg.dcm": "secondary capture, colour bars",
    "SC_ybr_full_422_uncompressed.dcm": "secondary capture, colour"}
KNOWN = {n: v for n, (_, v) in REAL_US.items()}


@dataclass
class Row:
    name: str
    what: str
    modality: str
    default_ingest: str               # "accepted" or the reason it is skipped
    view: str | None = None           # classifier, content forced through
    p_view: float | None = None
    p_a4c: float | None = None
    ood: float | None = None
    ood_level: str | None = None
    energy: float | None = None
    final: str | None = None          # what the app reports: the view, or OTHER (guard)
    detector: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _forced_cfg() -> Any:
    from echosonar.config.ingest import IngestConfig

    return IngestConfig(min_frames=1, allowed_modalities=[
        "US", "CT", "MR", "OT", "CR", "NM", "RTDOSE", "SC", "XA", "MG", "DX", "PT", "SEG",
        "RTIMAGE", ""], keep_source_names=True)


def _forced_read(path: Path) -> Any:
    """Read any image DICOM through the ultrasound path (stills accepted, any modality); when the
    US reader refuses its pixel layout, rebuild a US DICOM from pydicom's pixel array."""
    from echosonar.ingest.errors import IngestError
    from echosonar.ingest.raw import read_file

    cfg = _forced_cfg()
    try:
        return read_file(path, cfg)
    except IngestError as first:
        import tempfile

        try:
            frames = _pixels(path)
        except Exception:  # noqa: BLE001 - report the reader's reason
            raise first from None
        with tempfile.TemporaryDirectory() as d:
            p = write_us_dicom(Path(d) / "as_us.dcm", frames)
            return read_file(p, cfg)


def _pixels(path: Path) -> np.ndarray:
    """uint8 frames ``[T, H, W]`` of any pydicom image, windowed to its 1st-99th percentile."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    a = np.asarray(ds.pixel_array, np.float64)
    if a.ndim == 2 or (a.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3
                       and int(ds.get("NumberOfFrames", 1) or 1) == 1):
        a = a[None]
    if a.ndim == 4:
        a = a.mean(-1)
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def write_us_dicom(path: Path, frames: np.ndarray) -> Path:
    """Save uint8 ``[T, H, W]`` frames as a minimal multi-frame *ultrasound* DICOM (Modality
    US): how a CT slice or a photo saved by a careless tool reaches the app."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = np.ascontiguousarray(frames, np.uint8)
    if frames.ndim == 2:
        frames = frames[None]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime = 33.3
    ds.PixelData = frames.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def ct_like_slice(size: int = 256, n_frames: int = 4, seed: int = 0) -> np.ndarray:
    """A synthetic CT-like axial slice: an elliptical body (soft tissue grey) with a bright spine
    and ribs, two dark lungs, air outside; ``[n_frames, size, size]`` uint8 (static)."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    img = np.zeros((size, size))
    img[(x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1] = 110
    for cx in (-0.38, 0.38):
        img[((x - cx) / 0.3) ** 2 + ((y + 0.02) / 0.42) ** 2 <= 1] = 15   # lungs
    img[((x - 0.05) / 0.22) ** 2 + ((y + 0.05) / 0.2) ** 2 <= 1] = 130   # heart, soft tissue
    img[(x / 0.09) ** 2 + ((y - 0.45) / 0.08) ** 2 <= 1] = 240           # vertebra
    ang = np.arctan2(y, x)
    r = (x / 0.85) ** 2 + (y / 0.62) ** 2
    img[(r > 0.8) & (r < 0.9) & (np.sin(ang * 9) > 0.6)] = 230           # ribs
    img = img + rng.normal(0, 6, img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[None], n_frames, 0)


def default_ingest_reason(path: Path) -> str:
    from echosonar.ingest.errors import IngestError
    from echosonar.ingest.raw import read_file

    try:
        read_file(path)
        return "accepted"
    except IngestError as e:
        msg = str(e)
        return msg.split(": ", 1)[1] if ": " in msg else msg


def check_clip(row: Row, clip: Any, view_model: Any, detector: Any, known: str | None) -> Row:
    from echosonar.ingest.view_model import predict_probs
    from echosonar.ingest.view_ood import assess_clips

    p = predict_probs(view_model, [clip])[0]
    classes = list(view_model.config.classes)
    k = int(p.argmax())
    row.view, row.p_view = classes[k], round(float(p[k]), 3)
    row.p_a4c = round(float(p[classes.index("A4C")]), 3) if "A4C" in classes else None
    a = assess_clips(view_model, [clip])[0]
    row.ood = None if a["score"] is None else round(a["score"], 2)
    row.ood_level, row.energy = a["level"], round(a["energy"], 2)
    row.final = "OTHER" if a["level"] == "out" else row.view
    if detector is not None and row.final != "OTHER" and (known or row.view) in ("A4C", "A2C"):
        row.detector = detector_summary(detector, clip, known or row.view)
    return row


def detector_summary(detector: Any, clip: Any, view: str) -> dict[str, Any]:
    """Box centres (x, y in 0..1) of LV, RV, LA, RA at end-diastole, the two layout checks and
    LVEDD (cm)."""
    import dataclasses

    from echosonar.detect.infer import detect_clip

    det = detect_clip(detector, dataclasses.replace(clip, view=view))
    cen = {s: [round((b[0] + b[2]) / 2, 2), round((b[1] + b[3]) / 2, 2)]
           for s, b in (det.ed_boxes or {}).items() if s in ("LV", "RV", "LA", "RA")}
    out: dict[str, Any] = {"centres": cen}
    if "LV" in cen and "RV" in cen:
        out["lv_right_of_rv"] = bool(cen["LV"][0] > cen["RV"][0])
    atria = [cen[s][1] for s in ("LA", "RA") if s in cen]
    vent = [cen[s][1] for s in ("LV", "RV") if s in cen]
    if atria and vent:
        out["atria_below_ventricles"] = bool(min(atria) > max(vent))
    lvedd = (det.measurements or {}).get("lvedd_cm")
    out["lvedd_cm"] = None if lvedd is None or not np.isfinite(lvedd) else round(float(lvedd), 2)
    return out


def run_checks(view_model: Any, detector: Any = None) -> list[Row]:
    from pydicom.data import get_testdata_file

    from echosonar.ingest.preproc import preprocess

    cfg = _forced_cfg()
    rows: list[Row] = []
    names = [(n, REAL_US[n][0], REAL_US[n][1]) for n in REAL_US] + [
        (n, w, None) for n, w in NON_US.items()]
    for name, what, known in names:
        try:
            path = get_testdata_file(name, download=False)
        except Exception:  # noqa: BLE001 - only files that ship with pydicom
            path = None
        if not path:
            continue
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row = Row(name, what, str(ds.get("Modality", "") or "-"), default_ingest_reason(Path(path)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clip = preprocess(_forced_read(Path(path)), cfg)
        except Exception as e:  # noqa: BLE001 - the row says why
            row.error = f"{type(e).__name__}: {e}"[:120]
            rows.append(row)
            continue
        rows.append(check_clip(row, clip, view_model, detector, known))
    import tempfile

    from echosonar.ingest.raw import read_file

    with tempfile.TemporaryDirectory() as d:
        p = write_us_dicom(Path(d) / "ct_like.dcm", ct_like_slice())
        row = Row("synthetic CT-like slice", "saved as a US DICOM", "US", default_ingest_reason(p))
        rows.append(check_clip(row, preprocess(read_file(p), cfg), view_model, detector, None))
    return rows


def markdown(rows: list[Row]) -> str:
    head = ("| file | what it is | Modality | default ingest | view (p) | p(A4C) | OOD distance "
            "(level) | app says | detector: LV right of RV / atria below / LVEDD cm |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.what} | {r.modality} | {r.default_ingest} | "
                         f"not readable: {r.error} | | | | |")
            continue
        d = r.detector
        det = "" if not d else (f"{_yn(d.get('lv_right_of_rv'))} / "
                                f"{_yn(d.get('atria_below_ventricles'))} / "
                                f"{d.get('lvedd_cm')}")
        lines.append(f"| {r.name} | {r.what} | {r.modality} | {r.default_ingest} | {r.view} "
                     f"({r.p_view:.2f}) | {r.p_a4c:.3f} | {r.ood} ({r.ood_level}) | {r.final} | "
                     f"{det} |")
    return head + "\n".join(lines) + "\n"


def _yn(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "no")


def figure(out_png: str | Path, seed: int = 0, n_sim: int = 3, scale: int = 3) -> Path:
    """Real vs simulated A4C, as the view classifier sees them (``clip_input``: 64x64 after
    ingest's sector crop; first sampled frame): the real SonoSite cine, ``n_sim`` EchoSim A4C
    clips as rendered, the same clips under the training's ultrasound domain randomisation
    (:func:`~echosonar.ingest.view_train.us_augment`, then the generic
    :func:`~echosonar.ingest.view_train.augment`), and the same studies rendered with
    ``sim.realism=1`` (darker surroundings, soft borders, blood speckle)."""
    import tempfile

    import torch
    from PIL import Image, ImageDraw
    from pydicom.data import get_testdata_file

    from echosonar.config.sim import SimConfig
    from echosonar.ingest import ingest_manifest
    from echosonar.ingest.preproc import preprocess
    from echosonar.ingest.raw import read_file
    from echosonar.ingest.view_model import clip_input
    from echosonar.ingest.view_train import augment, us_augment
    from echosonar.simulate import write_study_set

    real = clip_input(preprocess(read_file(get_testdata_file("examples_ybr_color.dcm"))).frames,
                      4, 64)
    def a4c(realism: float) -> torch.Tensor:
        with tempfile.TemporaryDirectory() as d:
            write_study_set(Path(d) / "sim", SimConfig(studies=n_sim, seed=seed, realism=realism))
            studies = ingest_manifest(Path(d) / "sim")
        return torch.stack([clip_input(c.frames, 4, 64) for s in studies for c in s.clips
                            if c.view == "A4C"][:n_sim])

    sims, realistic = a4c(0.0), a4c(1.0)
    g = torch.Generator().manual_seed(seed)
    # CLEAN_SHARE of clips would stay as rendered: draw until every shown clip is randomised
    aug = augment(us_augment(sims, g, 1.0), g, 1.0)
    for _ in range(20):
        if not any(torch.equal(a, b) for a, b in zip(aug, sims, strict=True)):
            break
        aug = augment(us_augment(sims, g, 1.0), g, 1.0)

    groups = [("real A4C (SonoSite)", [real]),
              ("EchoSim A4C as rendered", list(sims)),
              ("same clips, domain-randomised", list(aug)),
              ("same studies, sim.realism=1", list(realistic))]
    tile, gap, head = 64 * scale, 6, 18
    width = sum(len(c) for _, c in groups) * (tile + gap) + 2 * 3 * gap
    sheet = Image.new("RGB", (width, tile + head + 4), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for title, clips in groups:
        draw.text((x + 2, 3), title, fill=(235, 235, 235))
        for clip in clips:
            im = Image.fromarray((np.asarray(clip[0].permute(1, 2, 0)) * 255).astype(np.uint8))
            sheet.paste(im.resize((tile, tile), Image.NEAREST), (x, head))
            x += tile + gap
        x += 2 * gap
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m echosonar.ingest.real_check",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--view-classifier", required=True, help="view-classifier folder")
    ap.add_argument("--detector", default=None, help="detector folder (optional)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--figure", default=None, metavar="PNG",
                    help="also draw real vs simulated A4C (before / after the domain "
                         "randomisation) as the classifier sees them")
    args = ap.parse_args(argv)
    if args.figure:
        print(f"figure: {figure(args.figure)}", file=sys.stderr)
    import torch

    from echosonar.ingest.view_model import ViewClassifier

    torch.set_num_threads(1)
    vm = ViewClassifier.from_pretrained(args.view_classifier).eval()
    det = None
    if args.detector:
        from echosonar.detect.model import Detector

        det = Detector.from_pretrained(args.detector).eval()
    rows = run_checks(vm, det)
    sys.stdout.write(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
