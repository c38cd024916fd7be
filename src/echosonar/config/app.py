"""App config (owned by the app stage): analyze, the server's limits, and the quickstart."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class AppConfig:
    threads: int = opt(1, "torch CPU threads for analyze/serve (1 was 4x faster than 2 on a "
                       "busy 2-core host; raise on a free machine)")
    max_new_tokens: int = opt(0, "generation length limit; 0 = the bundle's value")
    decoding: str = opt("guided", "'guided' (findings lists = the label head's calls at the "
                                  "bundle's thresholds, format skeleton forced; see "
                                  "reason.guided) or 'free' (plain greedy decoding)")
    engine: str = opt("auto", "decode step: 'auto' (the hand-written Llama step, fp32), 'int8' "
                              "(the same over int8 dynamically quantized matrices; the label "
                              "head stays fp32) or 'hf' (the model's own forward)")
    # -- server ----------------------------------------------------------------------------
    host: str = opt("127.0.0.1", "address echosonar serve binds to (keep it on localhost)")
    port: int = opt(8765, "port echosonar serve listens on")
    max_upload_mb: float = opt(512.0, "largest request body accepted, MiB (413 above)")
    max_files: int = opt(200, "most files per study upload, zip contents included")
    max_zip_entries: int = opt(2000, "most entries in an uploaded zip")
    max_unzipped_mb: float = opt(2048.0, "largest total uncompressed size of an uploaded zip, MiB")
    max_zip_entry_mb: float = opt(1024.0, "largest uncompressed size of one zip entry, MiB")
    max_zip_ratio: float = opt(250.0, "largest compression ratio of one zip entry, and of the "
                               "whole archive (zip bombs)")
    workers: int = opt(1, "studies analysed at the same time (more queue up)")
    job_ttl_s: float = opt(3600.0, "seconds a finished job's report stays in memory")
    max_jobs: int = opt(100, "finished jobs kept in memory (oldest dropped first)")
    work_dir: str = opt("", "where per-job upload folders go (deleted after each job); "
                        "'' = the system temp folder")
