"""``dataset build`` on the five-study example, a real DICOM cine, DICOM view tags, and planted
identifiers that must not reach the dataset."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from tests.dataset.example import build_example, position_splits

from echosonar.cli import main
from echosonar.dataset.build import split_of
from echosonar.ingest import iter_cache, read_index
from echosonar.ingest.raw import salted_hash
from echosonar.io.manifest import read_manifest
from echosonar.taxonomy import COLOR_VIEWS

SALT = "echosonar-default-salt"


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("example")
    return build_example(root, studies=5, image_size=48, views=True)


def _truth(example: dict[str, Path]) -> dict[str, object]:
    """Manifest record per salted key (the test knows the truth; the dataset must not need it),
    with the split the example's labels file gives."""
    _, records = read_manifest(example["studies"].parent.parent / "sim")
    for r, split in zip(records, position_splits(len(records)), strict=True):
        r.split = split
    return {salted_hash(f"ECHO-{i + 1:04d}", SALT): r for i, r in enumerate(records)}


def _build(example, out, *extra: str, labels: Path | None = None) -> int:
    return main(["dataset", "build", str(example["studies"]), "--labels",
                 str(labels or example["labels"]), "--out", str(out), "--quiet",
                 "--set", "ingest.image_size=32", *extra])


def test_five_study_example_is_a_cache_the_trainers_read(example, tmp_path):
    from echosonar.encode.data import clip_table

    out = tmp_path / "ds"
    assert _build(example, out, "--reports", str(example["reports"]), "--views",
                  str(example["views"])) == 0
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["studies"] == 5 and summary["errors"] == 0
    assert summary["view_source"]["views_file"] == summary["clips"]
    assert read_index(out)["protocol"] == "end-to-end"
    truth = _truth(example)
    studies = list(iter_cache(out))
    assert {s.key for s in studies} == set(truth)
    for s in studies:
        rec = truth[s.key]
        assert s.labels == rec.labels and s.split == rec.split
        assert s.report == {k: v.rstrip(".") for k, v in rec.report.items()}
        assert sorted(c.view for c in s.clips) == sorted(rec.views)
        assert s.reasoning is None  # written after encode, from the detector's evidence
        assert all(c.boxes is None and c.ed_index == -1 for c in s.clips)
    assert len(clip_table(studies)) == summary["clips"]


def test_splits_come_from_the_salted_key_without_a_split_column(example, tmp_path):
    labels = tmp_path / "labels.csv"
    rows = list(csv.reader(example["labels"].open()))
    with labels.open("w", newline="") as f:
        csv.writer(f).writerows([r[:-1] for r in rows])  # drop the split column
    for name, salt in (("a", SALT), ("b", SALT), ("c", "site-7")):
        assert _build(example, tmp_path / name, "--set", f"ingest.salt={salt}",
                      "--split-fractions", "0.5,0.25,0.25", "--views", str(example["views"]),
                      labels=labels) == 0
    a, b, c = (read_index(tmp_path / n)["studies"] for n in "abc")
    assert [(e["key"], e["split"]) for e in a] == [(e["key"], e["split"]) for e in b]
    assert all(e["split"] == split_of(e["key"], [0.5, 0.25, 0.25]) for e in a)
    assert not {e["key"] for e in a} & {e["key"] for e in c}  # another salt, other keys


def test_views_from_the_dicom_view_code_sequence(example, tmp_path):
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    code = {"A4C": "399214001", "A2C": "399232001", "PLAX": "399139001", "PSAX_AV": "399239005"}
    studies = tmp_path / "studies"
    shutil.copytree(example["studies"], studies)
    views = {(r[0], r[1]): r[2] for r in list(csv.reader(example["views"].open()))[1:]}
    for (sid, name), view in views.items():
        p = studies / sid / name
        ds = pydicom.dcmread(p)
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = code[view.replace("_COLOR", "")], "SCT"
        item.CodeMeaning = "whatever the vendor wrote"
        ds.ViewCodeSequence = Sequence([item])
        ds.save_as(p)
    out = tmp_path / "ds"
    assert main(["dataset", "build", str(studies), "--labels", str(example["labels"]), "--out",
                 str(out), "--quiet", "--set", "ingest.image_size=32"]) == 0
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["view_source"]["dicom_header"] == summary["clips"] == len(views)
    truth = _truth(example)
    for s in iter_cache(out):
        assert sorted(c.view for c in s.clips) == sorted(truth[s.key].views)
        assert all((c.view in COLOR_VIEWS) == (c.frames.shape[1] == 3) for c in s.clips)


def test_no_view_source_keeps_every_clip_out_and_exits_1(example, tmp_path, capsys):
    out = tmp_path / "ds"
    assert _build(example, out) == 1
    s = json.loads((out / "dataset.json").read_text())
    assert s["studies"] == 0 and s["other_clips_kept_out"] == s["view_source"]["unknown"] > 0
    assert any("no clip of a known view" in p["reason"] for p in s["problems"])
    assert "nothing usable" in capsys.readouterr().err


def test_rows_without_studies_and_studies_without_rows(example, tmp_path):
    labels = tmp_path / "labels.csv"
    rows = list(csv.reader(example["labels"].open()))
    rows = rows[:5] + [["ECHO-9999"] + rows[1][1:]]  # ECHO-0005 has no row; 9999 no folder
    with labels.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "ds"
    assert _build(example, out, "--views", str(example["views"]), labels=labels) == 0
    s = json.loads((out / "dataset.json").read_text())
    assert s["studies"] == 4
    probs = {(p["where"], p["reason"]) for p in s["problems"] if p["level"] == "error"}
    key5 = salted_hash("ECHO-0005", SALT)
    assert ("labels row 6", "no study with this identifier in the inputs") in probs
    assert (f"study folder #5 [{key5[:10]}]", "no labels row for this study; left out") in probs
    assert s["errors"] == 2  # study 5's views rows are not a third error: its study is
    assert "ECHO-" not in (out / "dataset.json").read_text()


def test_key_map_is_written_only_outside_the_dataset(example, tmp_path, capsys):
    out = tmp_path / "ds"
    assert _build(example, out, "--views", str(example["views"]), "--key-map",
                  str(out / "keys.csv")) == 2
    assert "outside the dataset folder" in capsys.readouterr().err
    assert _build(example, out, "--views", str(example["views"]), "--key-map",
                  str(tmp_path / "keys.csv")) == 0
    rows = list(csv.DictReader((tmp_path / "keys.csv").open()))
    assert {r["key"] for r in rows} == {e["key"] for e in read_index(out)["studies"]}
    assert rows[0]["study_id"] == "ECHO-0001"


def test_missing_labels_file_is_a_usage_error(example, tmp_path, capsys):
    assert _build(example, tmp_path / "ds", labels=tmp_path / "none.csv") == 2
    assert "--labels: no such file" in capsys.readouterr().err


PLANT = "DOE^JANE^PLANTED4711"
PLANT_UID = "1.2.826.0.1.3680043.47114711"


def _plant(src: Path, dst: Path, sid: str) -> None:
    """Copy one study's DICOMs into ``dst/<sid>`` renamed after the patient, with the planted
    identifier in every header field a site would fill."""
    import pydicom

    folder = dst / sid
    folder.mkdir(parents=True)
    for i, p in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(p)
        ds.PatientName, ds.PatientID = PLANT, PLANT.replace("^", "")
        ds.AccessionNumber, ds.StudyID = "PLANTED4711", "PLANTED4711"
        ds.StudyDescription = ds.SeriesDescription = f"echo of {PLANT}"
        ds.InstitutionName, ds.ReferringPhysicianName = f"{PLANT} clinic", PLANT
        ds.StudyInstanceUID = PLANT_UID
        ds.save_as(folder / f"{PLANT.replace('^', '_')}_{i}.dcm")


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_nothing_identifying_reaches_the_dataset(example, tmp_path, capsys):
    sid = f"{PLANT}-MRN4711"
    studies = tmp_path / "studies"
    _plant(example["studies"] / "ECHO-0001", studies, sid)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"study,findings,split\n{sid},mitral regurgitation,train\n")
    views = tmp_path / "views.csv"
    names = sorted(p.name for p in (studies / sid).iterdir())
    views.write_text("study,file,view\n" + "".join(f"{sid},{n},A4C\n" for n in names[:2]))
    out = tmp_path / "ds"
    for id_from in ("folder", "uid"):
        if id_from == "uid":
            labels.write_text(f"study,findings\n{PLANT_UID},healthy\n")
            views.write_text("study,file,view\n" + "".join(f"{PLANT_UID},{n},PLAX\n"
                                                           for n in names[:2]))
        rc = main(["dataset", "build", str(studies), "--labels", str(labels), "--views",
                   str(views), "--out", str(out), "--set", "ingest.image_size=32", "--set",
                   f"dataset.id_from={id_from}"])
        assert rc == 0
        written = _all_bytes(out) + "".join(capsys.readouterr()).encode()
        for needle in ("PLANTED4711", "DOE", "JANE", "MRN4711", PLANT_UID, "47114711",
                       names[0], str(studies)):
            assert needle.encode() not in written, (id_from, needle)
        s = json.loads((out / "dataset.json").read_text())
        assert s["studies"] == 1 and s["view_source"]["views_file"] == 2, s["problems"]


def test_real_dicom_cine_goes_in_with_the_views_file_override(tmp_path):
    from pydicom.data import get_testdata_file

    real = Path(get_testdata_file("examples_ybr_color.dcm"))
    studies = tmp_path / "studies"
    (studies / "REAL-1").mkdir(parents=True)
    shutil.copyfile(real, studies / "REAL-1" / "cine.dcm")
    labels = tmp_path / "labels.csv"
    labels.write_text("study,findings,split\nREAL-1,healthy,test\n")
    out = tmp_path / "ds"
    args = ["dataset", "build", str(studies), "--labels", str(labels), "--out", str(out),
            "--quiet"]
    # no view source: the clip is OTHER and kept out (the view classifier says OTHER too today)
    assert main(args) == 1
    assert json.loads((out / "dataset.json").read_text())["other_clips_kept_out"] == 1
    views = tmp_path / "views.csv"
    views.write_text("study,file,view\nREAL-1,cine.dcm,A4C\n")
    assert main(args + ["--views", str(views)]) == 0
    s = json.loads((out / "dataset.json").read_text())
    assert s["studies"] == 1 and s["views"] == {"A4C": 1} and s["errors"] == 0
    (study,) = iter_cache(out)
    assert study.split == "test" and study.labels["healthy"] == 1
    assert study.clips[0].view == "A4C" and study.clips[0].frames.shape[0] == 16


def test_rebuilding_into_the_same_folder_drops_studies_no_longer_built(example, tmp_path):
    out = tmp_path / "ds"
    assert _build(example, out, "--views", str(example["views"])) == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(example["labels"].read_text().splitlines(True)[:4]))
    assert _build(example, out, "--views", str(example["views"]), labels=labels) == 0
    entries = read_index(out)["studies"]
    assert len(entries) == 3 and len(list((out / "studies").glob("*.safetensors"))) == 3
    assert json.loads((out / "dataset.json").read_text())["studies"] == 3
