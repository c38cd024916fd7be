"""The bad-input corpus: everything a hostile tester tried, each case with the specific error
it must get (class or HTTP status or exit code, plus the message) — never a traceback, never a
silent acceptance. Cases:

* ``file:*`` — every damaged/unsupported file of tests/ingest/test_bad_input.py (read_file);
* ``spacing:*`` — absurd physical spacing: ingested, spacing dropped with a warning;
* ``upload:*`` — hostile uploads (zip bombs, traversal, links, counts): refused by
  ``expand_uploads`` from the zip's central directory, nothing inflated;
* ``cli:*`` — every CLI error path of analyze / serve / ingest: exit 2 and a clear message
  before any work;
* ``names:*`` — file and folder names carrying patient identifiers never reach ingest's outputs.

(``analyze --batch`` over inputs sharing a StudyInstanceUID: tests/app/test_analyze_batch.py.)
"""

from __future__ import annotations

import json
import math
import re
import socket
from pathlib import Path

import pydicom
import pytest

from echosonar.app.uploads import UploadError, UploadLimits, expand_uploads
from echosonar.cli import main
from echosonar.config.ingest import IngestConfig
from echosonar.ingest import errors as E
from echosonar.ingest import preprocess, read_file

from .test_bad_input import CASES as FILE_CASES
from .test_bad_input import _case
from .zipcraft import raw_zip

MIB = 1 << 20
PREAMBLE = b"\0" * 128 + b"DICM"


# -- spacing ----------------------------------------------------------------------------------

SPACING = {  # name: (PhysicalDeltaX, PhysicalDeltaY, warning pattern)
    "1e300": (1e300, 0.05, r"outside the plausible range 0\.001-1 cm/px"),
    "1e-9": (1e-9, 1e-9, r"outside the plausible range"),
    "2cm": (2.0, 2.0, r"outside the plausible range"),
    "anisotropic": (0.01, 0.5, r"implausibly anisotropic"),
}


@pytest.mark.parametrize("name", list(SPACING))
def test_spacing_outside_plausible_range_is_dropped_with_a_warning(name, tmp_path,
                                                                   dicom_factory, fan):
    dx, dy, pattern = SPACING[name]
    frames, _ = fan(n=4, h=48, w=64)
    p = dicom_factory(tmp_path / "s.dcm", frames, region=(4, 0, 59, 47))
    ds = pydicom.dcmread(p)
    ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX = dx
    ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaY = dy
    ds.save_as(p)
    cfg = IngestConfig(clip_len=4)
    raw = read_file(p, cfg)
    clip = preprocess(raw, cfg)
    assert math.isnan(clip.cm_per_px), clip.cm_per_px
    assert any(re.search(pattern, w) for w in raw.warnings), raw.warnings


def test_pixel_spacing_outside_range_is_dropped_and_plausible_one_kept(tmp_path, dicom_factory,
                                                                       fan):
    frames, _ = fan(n=4, h=48, w=64)
    cfg = IngestConfig(clip_len=4)
    for mm, ok in ((1e6, False), (0.5, True)):
        p = dicom_factory(tmp_path / f"p{mm}.dcm", frames, extra={"PixelSpacing": [mm, mm]})
        raw = read_file(p, cfg)
        clip = preprocess(raw, cfg)
        assert math.isnan(clip.cm_per_px) != ok
        assert ok or any("plausible range" in w for w in raw.warnings)


# -- damaged files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FILE_CASES)
def test_damaged_file(name, tmp_path, dicom_factory, fan):
    frames, _ = fan(n=4, h=48, w=64)
    good = dicom_factory(tmp_path / "good.dcm", frames, region=(4, 0, 59, 47))
    path, cls, cfg = _case(name, tmp_path, good, dicom_factory, fan)
    with pytest.raises(E.IngestError) as info:
        read_file(path, cfg)
    assert type(info.value) is cls and len(info.value.reason) > 5


# -- uploads ------------------------------------------------------------------------------------

def _dcm(tag: str = "") -> bytes:
    return PREAMBLE + b"FAKEDCM A4C " + tag.encode() + bytes(range(256))


def _upload(name: str, tmp: Path) -> tuple[list[Path], UploadLimits]:
    """The stored upload files of case ``name`` and the server limits it meets."""
    lim = UploadLimits()
    files: list[tuple[str, bytes]] = []
    if name == "1100_entries_of_1MiB_zeros":  # the 1.5 MB upload
        files = [("s.zip", raw_zip([(f"f{i:04d}.dcm", bytes(MIB)) for i in range(1100)]))]
    elif name == "1100_plain_entries":  # no bomb, just more files than one upload may hold
        files = [("s.zip", raw_zip([(f"f{i:04d}.dcm", _dcm(str(i))) for i in range(1100)],
                                   deflate=False))]
    elif name == "1MiB_zeros_entry":  # small entries used to skip the ratio check
        files = [("s.zip", raw_zip([("a.dcm", _dcm()), ("pad.dcm", bytes(MIB))]))]
    elif name == "entry_above_per_file_limit":
        lim = UploadLimits(max_zip_entry_mb=0.5)
        files = [("s.zip", raw_zip([("a.dcm", _dcm() + bytes(MIB))], deflate=False))]
    elif name == "total_above_limit":
        lim = UploadLimits(max_unzipped_mb=1.0)
        files = [("s.zip", raw_zip([(f"{i}.dcm", _dcm(str(i)) + bytes(400_000))
                                    for i in range(3)], deflate=False))]
    elif name == "whole_archive_ratio":  # every entry below the per-entry floor
        files = [("s.zip", raw_zip([(f"{i}.dcm", bytes(60_000)) for i in range(150)]))]
    elif name == "too_many_entries":
        lim = UploadLimits(max_zip_entries=10)
        files = [("s.zip", raw_zip([(f"{i}/", b"") for i in range(11)], deflate=False))]
    elif name == "files_plus_zip_over_count":
        files = [(f"{i}.dcm", _dcm(str(i))) for i in range(150)]
        files += [("s.zip", raw_zip([(f"z{i}.dcm", _dcm(f"z{i}")) for i in range(60)]))]
    elif name == "traversal":
        files = [("s.zip", raw_zip([("a.dcm", _dcm()), ("x/../../evil.dcm", _dcm())]))]
    elif name == "absolute":
        files = [("s.zip", raw_zip([("/etc/evil.dcm", _dcm())]))]
    elif name == "symlink":
        files = [("s.zip", raw_zip([("link.dcm", b"/etc/passwd")], deflate=False,
                                   external_attr=0o120777 << 16))]
    elif name == "encrypted":
        files = [("s.zip", raw_zip([("a.dcm", _dcm())], flags=0x1))]
    elif name == "not_a_zip":
        files = [("s.zip", b"PK\x03\x04" + bytes(range(256)) * 4)]
    elif name == "no_media":
        files = [("notes.txt", b"hello " * 100), ("x.jpg", b"\xff\xd8\xff\xe0" + bytes(300))]
    else:
        raise AssertionError(name)
    tmp.mkdir()
    stored = []
    for i, (n, data) in enumerate(files):
        stored.append(tmp / f"{i:04d}{Path(n).suffix}")
        stored[-1].write_bytes(data)
    return stored, lim


UPLOADS = {  # name: (HTTP status, message pattern)
    "1100_entries_of_1MiB_zeros": (413, r"zip entry 1 inflates more than 250x"),
    "1100_plain_entries": (413, r"zip holds 1100 files, above the limit of 200"),
    "1MiB_zeros_entry": (413, r"inflates more than 250x"),
    "entry_above_per_file_limit": (413, r"above the per-file limit of 0\.5 MiB"),
    "total_above_limit": (413, r"would inflate to 1 MiB, above the limit of 1 MiB"),
    "whole_archive_ratio": (413, r"inflates \d+x as a whole"),
    "too_many_entries": (413, r"zip has 11 entries, above the limit of 10"),
    "files_plus_zip_over_count": (413, r"zip holds 60 files, above the limit of 50"),
    "traversal": (400, r"entry 2 climbs out of the archive"),
    "absolute": (400, r"entry 1 is an absolute path"),
    "symlink": (400, r"entry 1 is a symbolic link"),
    "encrypted": (400, r"entry 1 is encrypted"),
    "not_a_zip": (400, r"not a readable zip archive"),
    "no_media": (415, r"none of the uploaded files is a DICOM file"),
}


@pytest.mark.parametrize("name", list(UPLOADS))
def test_hostile_upload_is_refused_before_anything_is_inflated(name, tmp_path):
    status, pattern = UPLOADS[name]
    folder = tmp_path / "job"
    stored, lim = _upload(name, folder)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(UploadError) as info:
        expand_uploads(stored, folder, lim)
    assert info.value.status == status and re.search(pattern, str(info.value)), str(info.value)
    if status != 415:  # refused from the central directory: not one entry was written
        assert sorted(p.name for p in folder.iterdir()) == before


# -- command lines ------------------------------------------------------------------------------

def _cli(name: str, tmp: Path) -> list[str]:
    a_file = tmp / "taken.txt"
    a_file.write_text("x")
    study = tmp / "study"
    study.mkdir()
    (study / "a.dcm").write_bytes(_dcm())
    analyze = ["analyze", str(study), "--model", str(tmp / "no-bundle"), "--out",
               str(tmp / "o")]
    ingest = ["ingest", str(study), "--out", str(tmp / "cache")]
    serve = ["serve", "--model", str(tmp / "no-bundle")]
    return {
        "analyze_out_is_a_file": analyze[:-1] + [str(a_file)],
        "analyze_batch_out_under_a_file": analyze[:-1] + [str(a_file / "x"), "--batch"],
        "analyze_max_new_tokens_negative": analyze + ["--max-new-tokens", "-1"],
        "analyze_threads_zero": analyze + ["--threads", "0"],
        "analyze_missing_input": ["analyze", str(tmp / "nope"), "--out", str(tmp / "o")],
        "analyze_bad_set": analyze + ["--set", "app.threads=lots"],
        "serve_port_zero": serve + ["--port", "0"],
        "serve_port_too_big": serve + ["--port", "70000"],
        "serve_workers_zero": serve + ["--workers", "0"],
        "serve_upload_limit_negative": serve + ["--max-upload-mb", "-1"],
        "serve_max_files_zero": serve + ["--max-files", "0"],
        "serve_zip_ratio_below_one": serve + ["--set", "app.max_zip_ratio=0.5"],
        "serve_ttl_nan": serve + ["--set", "app.job_ttl_s=nan"],
        "serve_work_dir_a_file": serve + ["--set", f"app.work_dir={a_file}"],
        "serve_remote_without_flag": serve + ["--host", "0.0.0.0"],
        "serve_port_in_use": serve + ["--port", "{busy}"],
        "ingest_workers_zero": ingest + ["--workers", "0"],
        "ingest_out_is_a_file": ingest[:-1] + [str(a_file)],
        "ingest_image_size_absurd": ingest + ["--set", "ingest.image_size=100000"],
        "ingest_view_min_conf_above_one": ingest + ["--set", "ingest.view_min_conf=2"],
        "ingest_fps_nan": ingest + ["--set", "ingest.default_fps=nan"],
        "ingest_view_model_not_a_checkpoint": ingest + ["--view-model", str(study)],
    }[name]


CLI = {  # name: message pattern on stderr (exit code 2 for all)
    "analyze_out_is_a_file": r"--out: .*taken\.txt exists and is not a folder",
    "analyze_batch_out_under_a_file": r"--out: cannot create .*taken\.txt is a file",
    "analyze_max_new_tokens_negative": r"--max-new-tokens must be between 1 and 16384",
    "analyze_threads_zero": r"--threads must be between 1 and 256",
    "analyze_missing_input": r"input not found",
    "analyze_bad_set": r"app\.threads",
    "serve_port_zero": r"port .* must be between 1 and 65535 \(got 0\)",
    "serve_port_too_big": r"port .* must be between 1 and 65535 \(got 70000\)",
    "serve_workers_zero": r"workers .* must be between 1 and 64",
    "serve_upload_limit_negative": r"max_upload_mb .* must be between",
    "serve_max_files_zero": r"max_files .* must be between 1",
    "serve_zip_ratio_below_one": r"app\.max_zip_ratio must be between 1",
    "serve_ttl_nan": r"app\.job_ttl_s must be between",
    "serve_work_dir_a_file": r"app\.work_dir: .*not a folder",
    "serve_remote_without_flag": r"refusing to bind 0\.0\.0\.0 without --allow-remote",
    "serve_port_in_use": r"cannot listen on 127\.0\.0\.1:\d+",
    "ingest_workers_zero": r"ingest\.workers must be between 1 and 256",
    "ingest_out_is_a_file": r"--out: .*taken\.txt exists and is not a folder",
    "ingest_image_size_absurd": r"ingest\.image_size must be between 8 and 1024",
    "ingest_view_min_conf_above_one": r"ingest\.view_min_conf must be between 0 and 1",
    "ingest_fps_nan": r"must be finite",
    "ingest_view_model_not_a_checkpoint": r"cannot load the view classifier",
}


@pytest.mark.parametrize("name", list(CLI))
def test_cli_error_path_exits_2_with_a_clear_message(name, tmp_path, capsys):
    argv = _cli(name, tmp_path)
    busy = socket.socket()
    try:
        if "{busy}" in argv:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            argv = [a.replace("{busy}", str(busy.getsockname()[1])) for a in argv]
        rc = main(argv)
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert rc == 2 and re.search(CLI[name], err), (rc, err)
    assert "Traceback" not in err and not (tmp_path / "o").exists()


# -- identifiers in names -----------------------------------------------------------------------

def test_patient_names_in_file_and_folder_names_never_reach_ingest_outputs(tmp_path, capsys,
                                                                           dicom_factory, fan):
    src = tmp_path / "Smith^Jane_MRN123"
    src.mkdir()
    frames, _ = fan(n=4, h=48, w=64)
    dicom_factory(src / "DOE_JOHN_1961.dcm", frames, region=(4, 0, 59, 47))
    (src / "DOE_JOHN_notes.dcm").write_bytes(b"not a dicom" * 30)  # skipped: named in summary
    cache = tmp_path / "cache"
    assert main(["ingest", str(src), "--out", str(cache), "--views",
                 "--set", "ingest.clip_len=4"]) == 0
    out = capsys.readouterr()
    texts = [out.out, out.err] + [p.read_bytes().decode("latin-1") for p in cache.rglob("*")
                                  if p.is_file()]
    for t in texts:
        for leak in ("DOE", "JOHN", "Smith", "MRN123", "1961"):
            assert leak not in t, (leak, t[:300])
    summary = json.loads((cache / "ingest_summary.json").read_text())
    assert summary["skipped"][0][0].startswith("file #2 [")
    index = json.loads((cache / "index.json").read_text())
    assert index["studies"][0]["clips"][0]["source"].startswith("file #1 [")
    # opting in keeps the names
    assert main(["ingest", str(src), "--out", str(tmp_path / "named"), "--keep-source-names",
                 "--set", "ingest.clip_len=4"]) == 0
    assert "DOE_JOHN_notes.dcm" in capsys.readouterr().out
