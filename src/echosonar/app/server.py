"""``echosonar serve``: upload a study, watch it being analysed, read the report; plus a JSON API.

Routes (OpenAPI schema at ``/openapi.json``)::

    GET  /                        upload form (DICOM/MP4/AVI files or one zip of a study)
    POST /jobs                    form upload -> 303 to /jobs/{id}
    GET  /jobs/{id}               progress page (refreshes itself) -> 303 to the report when done
    GET  /jobs/{id}/report        the report page (same HTML as analyze's report.html)
    POST /api/jobs                JSON API upload -> 202 {"job_id", "status_url", ...}
    GET  /api/jobs/{id}           {"status", "stage", "progress", "error", ...}
    GET  /api/jobs/{id}/result    result.json (409 until done)
    GET  /api/health              {"status": "ok", "model": ...}

Each upload gets its own temporary folder; files are stored under sequential names (a client's
file name is never a path), zips are checked before extraction (:mod:`echosonar.app.uploads`),
and the folder is deleted when the job ends, success or not. Only the result and the report page
stay, in memory, for ``job_ttl_s`` seconds (and at most ``max_jobs`` of them; a reaper thread
drops expired ones even when no request comes). Jobs run on a
thread pool of ``workers`` threads; each job owns its folder and its result, so concurrent
uploads cannot mix studies.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel

from echosonar.app.pipeline import STAGE_LABELS, Analysis, AnalysisError, Progress
from echosonar.app.report_html import RUO, render_report
from echosonar.app.uploads import UploadError, UploadLimits, expand_uploads, safe_name
from echosonar.config.app import AppConfig

log = logging.getLogger("echosonar.serve")
AnalyzeFn = Callable[[list[Path], Progress], Analysis]


class TooLarge(Exception):
    """Raised from inside the request body stream when it passes the upload limit."""


class BodyLimit:
    """ASGI middleware: 413 for request bodies above ``limit`` bytes, checked against the
    Content-Length header and again while the body streams in (chunked uploads have none)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise TooLarge
            return msg

        async def tracked(msg: dict) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, counted, tracked)
        except TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Callable) -> None:
        mb = self.limit / 2**20
        body = (f'{{"detail": "upload larger than the limit of {mb:g} MiB"}}').encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Job:
    id: str
    status: str = "queued"  # queued | running | done | failed
    stage: str = "queued"
    progress: float = 0.0
    created: float = field(default_factory=time.time)
    finished: float | None = None
    n_files: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    html: str | None = None

    def public(self) -> dict[str, Any]:
        return {"job_id": self.id, "status": self.status, "stage": self.stage,
                "progress": round(self.progress, 3), "n_files": self.n_files,
                "error": self.error, "status_url": f"/api/jobs/{self.id}",
                "result_url": f"/api/jobs/{self.id}/result",
                "report_url": f"/jobs/{self.id}/report",
                "study_key": self.result["study_key"] if self.result else None}


class JobStatus(BaseModel):
    job_id: str
    status: str
    stage: str
    progress: float
    n_files: int
    error: str | None
    status_url: str
    result_url: str
    report_url: str
    study_key: str | None


class JobStore:
    """Jobs by id, a thread pool to run them, and expiry of old results.

    A finished job's result and report (patient data) are dropped ``job_ttl_s`` after it ended:
    at the next request, or by a daemon reaper that wakes every ``min(60, job_ttl_s / 4)`` s, so
    an idle server does not keep them either."""

    def __init__(self, analyze: AnalyzeFn, cfg: AppConfig) -> None:
        self.analyze, self.cfg = analyze, cfg
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max(1, cfg.workers), thread_name_prefix="echosonar-job")
        self._stop = threading.Event()
        threading.Thread(target=self._reap, name="echosonar-reaper", daemon=True).start()

    def _reap(self) -> None:
        period = max(0.05, min(60.0, self.cfg.job_ttl_s / 4))
        while not self._stop.wait(period):
            with self.lock:
                self._expire()

    def close(self) -> None:
        """Stop the reaper (the server's shutdown; tests that build many apps)."""
        self._stop.set()

    def get(self, job_id: str) -> Job:
        with self.lock:
            self._expire()
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (unknown or expired)")
        return job

    def submit(self, folder: Path, files: list[Path]) -> Job:
        job = Job(uuid.uuid4().hex, n_files=len(files))
        with self.lock:
            self._expire()
            self.jobs[job.id] = job
        self.pool.submit(self._run, job, folder, files)
        return job

    def _run(self, job: Job, folder: Path, files: list[Path]) -> None:
        def progress(stage: str, frac: float) -> None:
            job.stage, job.progress = stage, max(job.progress, float(frac))

        job.status = "running"
        try:
            analysis = self.analyze(files, progress)
            job.html = render_report(analysis.result, analysis.keyframes)
            job.result = analysis.result
            job.status, job.stage, job.progress = "done", "done", 1.0
        except (AnalysisError, ValueError) as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - report, never kill the worker thread
            log.exception("job %s failed", job.id)
            job.status, job.error = "failed", f"internal error ({type(e).__name__}: {e})"
        finally:
            job.finished = time.time()
            shutil.rmtree(folder, ignore_errors=True)  # uploaded PHI does not outlive the job

    def _expire(self) -> None:
        now = time.time()
        done = sorted((j for j in self.jobs.values() if j.finished is not None),
                      key=lambda j: j.finished or 0.0)
        for i, j in enumerate(done):
            if now - (j.finished or now) > self.cfg.job_ttl_s or len(done) - i > self.cfg.max_jobs:
                del self.jobs[j.id]


def create_app(analyze: AnalyzeFn, cfg: AppConfig | None = None, model_name: str = "") -> FastAPI:
    """The FastAPI app. ``analyze(files, progress) -> Analysis`` does the work (dependency
    injection: the CLI passes the real pipeline with a loaded bundle, tests pass fakes)."""
    cfg = cfg or AppConfig()
    limits = UploadLimits(cfg.max_upload_mb, cfg.max_files, cfg.max_zip_entries,
                          cfg.max_unzipped_mb, cfg.max_zip_ratio, cfg.max_zip_entry_mb)
    store = JobStore(analyze, cfg)
    app = FastAPI(title="EchoSonar", version="1", docs_url=None, redoc_url=None,
                  description="Echocardiography study analysis (research use only — not for "
                              "diagnosis). Upload a study, poll the job, fetch the result.")
    app.state.jobs = store
    app.router.on_shutdown.append(store.close)
    app.add_middleware(BodyLimit, limit=int(cfg.max_upload_mb * 2**20))

    async def receive_upload(request: Request) -> Job:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise HTTPException(415, "send the study as multipart/form-data field 'files'")
        folder = Path(tempfile.mkdtemp(prefix="echosonar-job-", dir=cfg.work_dir or None))
        form = None
        try:
            form = await request.form(max_files=cfg.max_files + 1, max_fields=16)
            uploads = [u for u in form.getlist("files") if hasattr(u, "read")]
            if not uploads:
                raise UploadError("no files in the upload (form field 'files')")
            if len(uploads) > cfg.max_files:
                raise UploadError(f"more than {cfg.max_files} files in one upload", 413)
            stored = []
            for i, up in enumerate(uploads):
                dst = folder / safe_name(i, up.filename)
                with open(dst, "wb") as f:
                    while chunk := await up.read(1 << 20):
                        f.write(chunk)
                await up.close()
                stored.append(dst)
            files = expand_uploads(stored, folder, limits)
        except UploadError as e:
            shutil.rmtree(folder, ignore_errors=True)
            raise HTTPException(e.status, str(e)) from e
        except OSError as e:  # disk full, work_dir gone: the client can retry later
            shutil.rmtree(folder, ignore_errors=True)
            log.warning("upload could not be stored: %s", type(e).__name__)
            raise HTTPException(507, "the server could not store the upload "
                                     f"({type(e).__name__}); try again later") from e
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if form is not None:  # the parser's spooled temporary files, on every path
                await form.close()
        return store.submit(folder, files)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return _page("Upload a study", _FORM.format(mb=f"{cfg.max_upload_mb:g}",
                                                    n=cfg.max_files), model_name)

    @app.post("/jobs", include_in_schema=False)
    async def upload_form(request: Request) -> RedirectResponse:
        job = await receive_upload(request)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def job_page(job_id: str) -> Any:
        job = store.get(job_id)
        if job.status == "done":
            return RedirectResponse(f"/jobs/{job.id}/report", status_code=303)
        if job.status == "failed":
            body = (f'<div class="card"><h2>Analysis failed</h2><p class="err">'
                    f'{escape(job.error or "")}</p><p><a href="/">Upload another study</a></p>'
                    "</div>")
            return HTMLResponse(_page("Analysis failed", body, model_name), status_code=422)
        pct = int(round(100 * job.progress))
        body = (f'<div class="card" id="job" data-status="{job.status}"><h2>Analysing the study'
                f'</h2><p>{job.n_files} file(s) received. Now: <b id="stage">'
                f'{escape(STAGE_LABELS.get(job.stage, job.stage))}'
                f'</b></p><div class="prog"><i style="width:{pct}%"></i></div><p class="muted">'
                f"{pct}% · this page refreshes itself</p></div>")
        return HTMLResponse(_page("Analysing…", body, model_name, refresh=1))

    @app.get("/jobs/{job_id}/report", response_class=HTMLResponse, include_in_schema=False)
    def report_page(job_id: str) -> Any:
        job = store.get(job_id)
        if job.status != "done":
            return RedirectResponse(f"/jobs/{job.id}", status_code=303)
        return HTMLResponse(job.html)

    @app.post("/api/jobs", status_code=202, response_model=JobStatus,
              summary="Upload one study (multipart field 'files': DICOM/MP4/AVI files or a zip)",
              responses={400: {"description": "bad upload (e.g. unsafe zip entry)"},
                         413: {"description": "upload above the size or file-count limit"},
                         415: {"description": "no DICOM or video file in the upload"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["files"],
                      "properties": {"files": {"type": "array", "items": {
                          "type": "string", "format": "binary"}}}}}}}})
    async def api_upload(request: Request) -> JobStatus:
        return JobStatus(**(await receive_upload(request)).public())

    @app.get("/api/jobs/{job_id}", response_model=JobStatus, summary="Job status and progress")
    def api_status(job_id: str) -> JobStatus:
        return JobStatus(**store.get(job_id).public())

    @app.get("/api/jobs/{job_id}/result", summary="The result.json of a finished job",
             responses={409: {"description": "job not finished (or failed)"}})
    def api_result(job_id: str) -> JSONResponse:
        job = store.get(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}"
                                     + (f": {job.error}" if job.error else ""))
        return JSONResponse(job.result)

    @app.get("/api/health", summary="Liveness and the loaded model")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "notice": RUO}

    return app


_FORM = """<div class="card"><h2>Analyse an echocardiography study</h2>
<p>Upload the cine clips of <b>one</b> study: DICOM files, MP4/AVI videos, or a single zip of the
study folder (at most {n} files, {mb} MiB in total). Files are deleted as soon as the analysis ends.
</p>
<form action="/jobs" method="post" enctype="multipart/form-data" id="upload">
<label class="drop">Study files or zip<input type="file" name="files" id="files" multiple
 accept=".dcm,.dicom,.mp4,.avi,.mov,.zip,application/dicom,video/*,application/zip"></label>
<button type="submit" id="submit">Analyse study</button>
</form></div>
<div class="card muted"><h2>API</h2><p><code>POST /api/jobs</code> (multipart field
<code>files</code>) &rarr; <code>GET /api/jobs/{{id}}</code> &rarr;
<code>GET /api/jobs/{{id}}/result</code>. Schema: <a href="/openapi.json">/openapi.json</a>.</p>
</div>"""

_CSS = """body{margin:0;background:#f1f5f9;color:#0f172a;font:15px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}.top{background:#0b3a5b;color:#fff;
padding:14px 28px;font-size:20px;font-weight:700}.top span{font-weight:400;opacity:.8;
font-size:14px;margin-left:10px}.ruo{background:#7f1d1d;color:#fff;padding:8px 28px;
font-weight:600;font-size:13.5px}.wrap{max-width:820px;margin:24px auto;padding:0 20px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:18px 22px;
margin-bottom:18px}h2{font-size:16px;margin:0 0 10px;color:#0b3a5b;text-transform:uppercase;
letter-spacing:.6px}.drop{display:block;border:2px dashed #94a3b8;border-radius:10px;
padding:22px;margin:12px 0;color:#475569;font-weight:600}.drop input{display:block;
margin-top:10px}button{background:#0e7490;color:#fff;border:0;border-radius:8px;
padding:10px 20px;font-size:15px;font-weight:600;cursor:pointer}.prog{height:12px;
background:#e2e8f0;border-radius:6px;overflow:hidden}.prog i{display:block;height:100%;
background:#0e7490;transition:width .3s}.muted{color:#475569}.err{color:#b91c1c;
font-weight:600}code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px}"""


def _page(title: str, body: str, model: str, refresh: int = 0) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    model_txt = f"<span>model {escape(model)}</span>" if model else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
            f"<title>EchoSonar · {escape(title)}</title><style>{_CSS}</style></head><body>"
            f'<div class="top">EchoSonar{model_txt}</div><div class="ruo">&#9888; {RUO}</div>'
            f'<div class="wrap">{body}</div></body></html>')
