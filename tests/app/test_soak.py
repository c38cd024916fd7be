"""Bounded soak of ``serve`` on the loopback address: 200 requests, 8 at a time, a seeded mix of
good studies and hostile or broken requests, against the real server (uvicorn, thread pool, job
store, upload checks) with the fake pipeline of conftest.py.

Checks: every request gets its specific answer; every finished job's result is the study that
request uploaded (views, and the study key the fake ingest derives from the uploaded bytes);
resident memory after the run is within a fixed margin of the level after warm-up (the job store
is capped, nothing else may accumulate); no job folder outlives its job.
"""

from __future__ import annotations

import functools
import hashlib
import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from echosonar.app.pipeline import analyze_study
from echosonar.app.server import create_app
from echosonar.config.app import AppConfig

from .conftest import PREAMBLE, live_server

N_REQUESTS, CONCURRENCY, WARMUP = 200, 8, 40
RSS_MARGIN_MB = 40.0  # measured: 307 -> 315 MiB over the last 160 requests (2-core host)
VIEWS = ("A4C", "PLAX", "A2C", "PSAX_AV", "A4C_COLOR")
KINDS = ("good", "good", "good", "health", "not_media", "traversal", "bomb", "too_many",
         "too_big", "unknown_job", "not_multipart", "unreadable")


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


@functools.cache
def _bomb() -> bytes:
    """40 entries of 1 MiB of zeros in ~40 KiB (made once)."""
    return _zip([(f"{k}.dcm", bytes(1 << 20)) for k in range(40)])


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fake(view: str, tag: str) -> bytes:
    return PREAMBLE + f"FAKEDCM {view} {tag}\n".encode() + bytes(range(256))


def _expected_key(datas: list[bytes]) -> str:
    h = hashlib.sha1()  # what the fake ingest (conftest._ingest) derives from the files
    for d in datas:
        h.update(d[len(PREAMBLE):])
    return h.hexdigest()[:16]


def _one(client: httpx.Client, i: int, kind: str) -> None:
    """Send request ``i`` of ``kind``; assert its specific answer (and its job's result)."""
    if kind == "health":
        assert client.get("/api/health").json()["status"] == "ok"
        return
    if kind == "unknown_job":
        assert client.get(f"/api/jobs/{i:032x}").status_code == 404
        return
    if kind == "not_multipart":
        r = client.post("/api/jobs", content=b"x" * 100, headers={"content-type": "text/plain"})
        assert r.status_code == 415
        return
    files: list[tuple[str, bytes]]
    views: list[str] = []
    if kind in ("good", "unreadable"):
        rng = np.random.default_rng(i)
        views = list(rng.choice(VIEWS, size=int(rng.integers(1, 4)), replace=False))
        files = [(f"{v}.dcm", _fake(v, f"req{i}")) for v in views]
        if kind == "unreadable":  # sniffs as DICOM, the (fake) ingest cannot read it
            files = [("a.dcm", PREAMBLE + bytes(64))]
    elif kind == "not_media":
        files = [("notes.txt", b"patient notes " * 40)]
    elif kind == "traversal":
        files = [("s.zip", _zip([("a.dcm", _fake("A4C", str(i))),
                                 ("../../etc/x.dcm", _fake("PLAX", str(i)))]))]
    elif kind == "bomb":
        files = [("s.zip", _bomb())]
    elif kind == "too_many":
        files = [(f"{k}.dcm", _fake("A4C", f"{i}-{k}")) for k in range(9)]
    elif kind == "too_big":
        files = [("a.dcm", _fake("A4C", str(i)) + bytes(300_000))]
    else:
        raise AssertionError(kind)
    r = client.post("/api/jobs", files=[("files", f) for f in files])
    want = {"not_media": 415, "traversal": 400, "bomb": 413, "too_many": 413,
            "too_big": 413}.get(kind, 202)
    assert r.status_code == want, (kind, r.status_code, r.text)
    if want != 202:
        return
    job = r.json()["job_id"]
    while (st := client.get(f"/api/jobs/{job}").json())["status"] not in ("done", "failed"):
        time.sleep(0.01)
    if kind == "unreadable":
        assert st["status"] == "failed" and "no readable echo clip" in st["error"]
        return
    assert st["status"] == "done", st
    res = client.get(f"/api/jobs/{job}/result").json()
    assert sorted(c["view"] for c in res["clips"]) == sorted(views)
    assert res["study_key"] == _expected_key([d for _, d in files])


def test_serve_soak_memory_flat_nothing_mixed_nothing_left(tmp_path, fake_bundle, fake_stages):
    work = tmp_path / "work"
    work.mkdir()
    cfg = AppConfig(work_dir=str(work), workers=2, max_files=8, max_upload_mb=0.25,
                    max_jobs=16, job_ttl_s=3600)
    app = create_app(lambda files, progress: analyze_study(files, fake_bundle,
                                                           progress=progress,
                                                           stages=fake_stages),
                     cfg, model_name="fake")
    rng = np.random.default_rng(23)
    kinds = [KINDS[int(k)] for k in rng.integers(0, len(KINDS), N_REQUESTS)]
    base, stop = live_server(app)
    errors: list[BaseException] = []
    rss: dict[str, float] = {}

    def task(i: int) -> None:
        try:
            _one(client, i, kinds[i])
        except BaseException as e:  # noqa: BLE001 - collected and re-raised below
            errors.append(e)

    try:
        with httpx.Client(base_url=base, timeout=30,
                          limits=httpx.Limits(max_connections=CONCURRENCY)) as client, \
                ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(task, range(WARMUP)))
            rss["warm"] = _rss_mb()
            list(pool.map(task, range(WARMUP, N_REQUESTS)))
            rss["end"] = _rss_mb()
    finally:
        stop()
    assert not errors, errors[:3]
    assert kinds.count("good") > 40 and len(set(kinds)) == len(set(KINDS))
    print(f"soak: RSS after warm-up {rss['warm']:.1f} MiB, at the end {rss['end']:.1f} MiB")
    assert rss["end"] - rss["warm"] < RSS_MARGIN_MB, rss
    assert len(app.state.jobs.jobs) <= cfg.max_jobs + CONCURRENCY  # the store stays capped
    assert not any(work.iterdir())  # every upload folder went with its job
