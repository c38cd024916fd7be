"""Server: limits, unsafe zips, non-DICOM uploads, concurrent studies, cleanup (fake pipeline)."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from echosonar.app.pipeline import analyze_study
from echosonar.app.server import create_app
from echosonar.config.app import AppConfig

from .conftest import fake_dicom, live_server


def _dcm(tmp_path: Path, view: str, salt: str = "") -> bytes:
    return fake_dicom(tmp_path / f"{view}{salt}.bin", view, salt).read_bytes()


def _wait(client, job_id: str, timeout: float = 20.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = client.get(f"/api/jobs/{job_id}").json()
        if st["status"] in ("done", "failed"):
            return st
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def make_client(tmp_path, fake_bundle, fake_stages):
    seen: list[list[Path]] = []

    def build(delay: float = 0.0, barrier: threading.Barrier | None = None, **cfg):
        def analyze(files, progress):
            seen.append(list(files))
            if barrier is not None:
                barrier.wait(timeout=10)  # both jobs are inside the pipeline at once
            time.sleep(delay)
            return analyze_study(files, fake_bundle, progress=progress, stages=fake_stages)

        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        app = create_app(analyze, AppConfig(work_dir=str(work), **cfg), model_name="fake")
        return TestClient(app), work

    build.seen = seen
    return build


def test_upload_analyze_report_and_cleanup(make_client, tmp_path):
    client, work = make_client()
    files = [("files", ("patient_DOE_JOHN.dcm", _dcm(tmp_path, "A4C"), "application/dicom")),
             ("files", ("b.dcm", _dcm(tmp_path, "PLAX"), "application/dicom"))]
    r = client.post("/api/jobs", files=files)
    assert r.status_code == 202, r.text
    st = _wait(client, r.json()["job_id"])
    assert st["status"] == "done" and st["progress"] == 1.0
    res = client.get(st["result_url"]).json()
    assert [c["view"] for c in res["clips"]] == ["A4C", "PLAX"]
    page = client.get(st["report_url"]).text
    assert "Research use only" in page and 'id="view-A4C"' in page
    assert "DOE_JOHN" not in page and "DOE_JOHN" not in str(res)
    assert not any(work.iterdir())  # uploads deleted with the job
    stored = make_client.seen[0]
    assert [p.name for p in stored] == ["0000.dcm", "0001.dcm"]  # client names never used


def test_html_flow_redirects_to_report(make_client, tmp_path):
    client, _ = make_client()
    assert "Analyse study" in client.get("/").text
    r = client.post("/jobs", files=[("files", ("a.dcm", _dcm(tmp_path, "A4C")))],
                    follow_redirects=False)
    assert r.status_code == 303
    job_url = r.headers["location"]
    _wait(client, job_url.rsplit("/", 1)[1])
    r = client.get(job_url, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("/report")


def test_openapi_schema(make_client):
    client, _ = make_client()
    spec = client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/result"} <= set(spec["paths"])
    body = spec["paths"]["/api/jobs"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body


def test_oversized_upload_rejected(make_client, tmp_path):
    client, work = make_client(max_upload_mb=0.01)
    big = _dcm(tmp_path, "A4C") + b"\0" * 20_000
    r = client.post("/api/jobs", files=[("files", ("a.dcm", big))])
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed-body counter must catch it
        for _ in range(40):
            yield b"x" * 1000

    r = client.post("/api/jobs", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=abc"})
    assert r.status_code == 413
    assert not any(work.iterdir())


def test_too_many_files_rejected(make_client, tmp_path):
    client, work = make_client(max_files=2)
    files = [("files", (f"{i}.dcm", _dcm(tmp_path, "A4C", str(i)))) for i in range(3)]
    r = client.post("/api/jobs", files=files)
    assert r.status_code == 413
    assert not any(work.iterdir())


def _zip(entries: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compress)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.dcm", "study/../../evil.dcm", "/abs/evil.dcm",
                                  "C:\\evil.dcm", "..\\evil.dcm"])
def test_zip_with_path_traversal_rejected(make_client, tmp_path, name):
    client, work = make_client()
    z = _zip({"study/a.dcm": _dcm(tmp_path, "A4C"), name: _dcm(tmp_path, "PLAX")})
    r = client.post("/api/jobs", files=[("files", ("study.zip", z, "application/zip"))])
    assert r.status_code == 400 and "archive refused" in r.json()["detail"]
    assert not any(work.iterdir())
    assert not list(tmp_path.rglob("evil.dcm"))


def test_zip_bomb_rejected(make_client, tmp_path):
    client, work = make_client(max_unzipped_mb=1.0)
    z = _zip({"a.dcm": _dcm(tmp_path, "A4C"), "pad.dcm": b"\0" * (3 << 20)})
    assert len(z) < 20_000
    r = client.post("/api/jobs", files=[("files", ("s.zip", z))])
    assert r.status_code == 413
    client, work = make_client(max_unzipped_mb=100.0, max_zip_ratio=50)
    r = client.post("/api/jobs", files=[("files", ("s.zip", z))])
    assert r.status_code == 413 and "inflates" in r.json()["detail"]
    assert not any(work.iterdir())


def test_zip_of_a_study_is_analysed(make_client, tmp_path):
    client, _ = make_client()
    z = _zip({"STUDY/": b"", "STUDY/x/a.dcm": _dcm(tmp_path, "A4C"),
              "STUDY/b.dcm": _dcm(tmp_path, "PSAX_AV"), "__MACOSX/._a.dcm": b"junk"})
    r = client.post("/api/jobs", files=[("files", ("s.zip", z))])
    st = _wait(client, r.json()["job_id"])
    assert st["status"] == "done"
    views = sorted(c["view"] for c in client.get(st["result_url"]).json()["clips"])
    assert views == ["A4C", "PSAX_AV"]


def test_non_dicom_files(make_client, tmp_path):
    client, work = make_client()
    r = client.post("/api/jobs", files=[("files", ("notes.txt", b"hello world" * 20)),
                                        ("files", ("x.jpg", b"\xff\xd8\xff\xe0" + b"0" * 200))])
    assert r.status_code == 415 and "none of the uploaded files" in r.json()["detail"]
    r = client.post("/api/jobs", data={"x": "1"})
    assert r.status_code in (400, 415)
    # a non-DICOM file beside real ones is skipped with a warning, not fatal
    r = client.post("/api/jobs", files=[("files", ("a.dcm", _dcm(tmp_path, "A4C"))),
                                        ("files", ("notes.txt", b"hello" * 50))])
    st = _wait(client, r.json()["job_id"])
    res = client.get(st["result_url"]).json()
    assert any("skipped file" in w for w in res["warnings"])
    assert not any(work.iterdir())


def test_failed_job_reports_error(make_client, tmp_path):
    client, work = make_client()
    # sniffs as DICOM (preamble + DICM) but the fake ingest cannot read it -> job fails
    bad = b"\0" * 128 + b"DICM" + b"\0" * 64
    r = client.post("/api/jobs", files=[("files", ("a.dcm", bad))])
    st = _wait(client, r.json()["job_id"])
    assert st["status"] == "failed" and "no readable echo clip" in st["error"]
    assert client.get(st["result_url"]).status_code == 409
    assert client.get(f"/jobs/{st['job_id']}").status_code == 422
    assert client.get("/api/jobs/nope").status_code == 404
    assert not any(work.iterdir())


def test_two_concurrent_studies_do_not_mix(make_client, tmp_path):
    barrier = threading.Barrier(2)
    client, work = make_client(barrier=barrier, delay=0.2, workers=2)
    base, stop = live_server(client.app)
    uploads = {"one": ["A4C", "PLAX"], "two": ["A2C", "PSAX_AV", "A4C_COLOR"]}
    jobs: dict[str, str] = {}

    def post(name: str) -> None:
        files = [("files", (f"{v}.dcm", _dcm(tmp_path, v, name))) for v in uploads[name]]
        jobs[name] = httpx.post(f"{base}/api/jobs", files=files, timeout=20).json()["job_id"]

    try:
        threads = [threading.Thread(target=post, args=(n,)) for n in uploads]
        [t.start() for t in threads]
        [t.join() for t in threads]
        with httpx.Client(base_url=base, timeout=20) as c:
            results = {n: c.get(f"/api/jobs/{_wait(c, j)['job_id']}/result").json()
                       for n, j in jobs.items()}
    finally:
        stop()
    assert results["one"]["study_key"] != results["two"]["study_key"]
    for name, views in uploads.items():
        assert sorted(c["view"] for c in results[name]["clips"]) == sorted(views)
        assert all(results[name]["study_key"] in s["text"]
                   for s in results[name]["report"]["sections"])
    assert not any(work.iterdir())


def test_finished_results_expire_without_any_request(make_client, tmp_path):
    """Patient data does not outlive ``job_ttl_s`` on an idle server: the reaper drops it."""
    client, _ = make_client(job_ttl_s=1.0)
    r = client.post("/api/jobs", files=[("files", ("a.dcm", _dcm(tmp_path, "A4C")))])
    job_id = _wait(client, r.json()["job_id"])["job_id"]
    store = client.app.state.jobs
    store.jobs[job_id].finished -= 5.0  # as if it ended 5 s ago (no sleeping through the TTL)
    t0 = time.time()
    while job_id in store.jobs:  # no request is made meanwhile
        assert time.time() - t0 < 30, "the reaper never ran"
        time.sleep(0.05)
    assert client.get(f"/api/jobs/{job_id}").status_code == 404
    store.close()


def test_expired_result_is_gone_at_the_next_read(make_client, tmp_path):
    client, _ = make_client()  # default TTL: the reaper sleeps, the read itself expires it
    r = client.post("/api/jobs", files=[("files", ("a.dcm", _dcm(tmp_path, "A4C")))])
    job_id = _wait(client, r.json()["job_id"])["job_id"]
    client.app.state.jobs.jobs[job_id].finished -= 2 * 3600
    assert client.get(f"/api/jobs/{job_id}/result").status_code == 404
