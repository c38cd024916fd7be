"""Study-set files: manifest, DICOM readable with spacing and regions, resume, CLI errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pydicom
import pytest

from echosonar import taxonomy as tx
from echosonar.cli import main
from echosonar.io.manifest import read_manifest
from echosonar.simulate.presets import SimConfigError
from echosonar.simulate.writer import write_study_set
from echosonar.textformat import parse_generation, target_text

from .conftest import tiny_cfg


def test_manifest_and_dicoms(tiny_set):
    out, cfg, path = tiny_set
    meta, studies = read_manifest(path)
    assert meta["seed"] == cfg.seed and meta["preset"] == "default" and len(studies) == 3
    study_uids = set()
    for s in studies:
        assert s.split in ("train", "val", "test")
        assert s.labels == tx.labels_from_measurements(s.measurements)
        p = parse_generation(target_text(s.reasoning, s.labels, s.report))
        assert p.well_formed and p.findings == {k for k, v in s.labels.items() if v}
        uids = set()
        for c in s.clips:
            ds = pydicom.dcmread(out / c.path)
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and ds.Modality == "US"
            assert ds.PatientName.family_name == "SIMULATED" and "SIM" in ds.PatientID
            px = ds.pixel_array
            color = c.view in tx.COLOR_VIEWS
            assert px.shape == ((c.n_frames, 64, 64, 3) if color else (c.n_frames, 64, 64))
            assert ds.PhotometricInterpretation == ("RGB" if color else "MONOCHROME2")
            assert int(ds.NumberOfFrames) == c.n_frames
            assert abs(float(ds.FrameTime) - 1000 / c.fps) < 0.01
            reg = ds.SequenceOfUltrasoundRegions[0]
            assert reg.PhysicalUnitsXDirection == 3 and reg.PhysicalUnitsYDirection == 3
            assert abs(reg.PhysicalDeltaX - c.cm_per_px) < 1e-6
            assert [reg.RegionLocationMinX0, reg.RegionLocationMinY0, reg.RegionLocationMaxX1,
                    reg.RegionLocationMaxY1] == c.sector["bbox"]
            uids.add(ds.StudyInstanceUID)
            pydicom.uid.UID(ds.SOPInstanceUID).is_valid  # noqa: B018
            assert len(c.boxes) == c.n_frames
        assert len(uids) == 1
        study_uids |= uids
    assert len(study_uids) == 3


def test_resume_interrupt_and_rerun(tmp_path, monkeypatch):
    cfg = tiny_cfg(seed=9, studies=3)
    from echosonar.simulate import writer

    real = writer.write_dicom
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:            # dies inside the second study
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(writer, "write_dicom", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_study_set(tmp_path, cfg)
    done = [p for p in (tmp_path / "studies").iterdir() if not p.name.startswith(".")]
    assert len(done) == 1 and (done[0] / "study.json").is_file()
    assert not list((tmp_path / "studies").glob(".*"))       # no half-written study left
    monkeypatch.setattr(writer, "write_dicom", real)
    mtime = (done[0] / "study.json").stat().st_mtime_ns
    path = write_study_set(tmp_path, cfg)
    assert (done[0] / "study.json").stat().st_mtime_ns == mtime   # kept, not re-rendered
    first = path.read_text()
    # same result as an uninterrupted run in one go
    other = write_study_set(tmp_path / "fresh", cfg)
    a, b = json.loads(first)["studies"], json.loads(other.read_text())["studies"]
    assert a == b
    with pytest.raises(SimConfigError, match="different settings"):
        write_study_set(tmp_path, dataclasses.replace(cfg, seed=10))


def test_worker_count_does_not_change_output(tmp_path):
    cfg = tiny_cfg(seed=11, studies=2)
    one = write_study_set(tmp_path / "one", cfg)
    two = write_study_set(tmp_path / "two", dataclasses.replace(cfg, workers=2))
    assert json.loads(one.read_text())["studies"] == json.loads(two.read_text())["studies"]
    _, studies = read_manifest(one)
    for c in studies[1].clips:
        a = pydicom.dcmread(tmp_path / "one" / c.path).pixel_array
        b = pydicom.dcmread(tmp_path / "two" / c.path).pixel_array
        assert np.array_equal(a, b)
        assert c.view not in c.path                  # file names do not leak the view


@pytest.mark.parametrize("args", [
    ["--studies", "-2"], ["--preset", "weird", "--studies", "1"],
    ["--studies", "1", "--set", "sim.prev_effusion=2"], ["--studies", "1", "--set",
                                                         "sim.views=[A4C,BOGUS]"],
])
def test_cli_bad_options(tmp_path, capsys, args):
    assert main(["simulate", "--out", str(tmp_path / "o"), *args]) == 2
    assert "simulate:" in capsys.readouterr().err


def test_cli_preview_and_mp4(tmp_path):
    png = tmp_path / "sheet.png"
    assert main(["simulate", "--preview", "1", "--out", str(png), "--set", "sim.image_size=64",
                 "--set", "sim.frames=8"]) == 0
    from PIL import Image

    assert Image.open(png).size[0] > 64
    out = tmp_path / "mp4set"
    assert main(["simulate", "--studies", "1", "--out", str(out), "--mp4", "--set",
                 "sim.image_size=64", "--set", "sim.frames=8", "--set",
                 "sim.views=[A4C,A4C_COLOR]"]) == 0
    _, studies = read_manifest(out)
    import av

    for c in studies[0].clips:
        with av.open(str(out / c.video_path)) as f:
            assert sum(1 for _ in f.decode(video=0)) == c.n_frames
