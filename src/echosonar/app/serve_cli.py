"""``echosonar serve``: the upload form, report page and JSON API on localhost (FastAPI).

    echosonar serve                                         # the shipped model; http://127.0.0.1:8765/
    echosonar serve --model BUNDLE --port 9000 --workers 2 --max-upload-mb 256

It binds to 127.0.0.1 unless ``--host`` says otherwise, and a non-loopback address also needs
``--allow-remote`` (the server has no authentication; put it behind one before exposing it; see
SECURITY.md). Settings out of range, an unwritable ``app.work_dir`` and a port already in use are
refused (exit code 2) before the bundle loads.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--model", metavar="BUNDLE", default=None,
                        help="model bundle folder (default: the shipped model, the "
                             "repository's models/echosonar-r, or $ECHOSONAR_MODEL)")
    for comp in ("view-classifier", "detector", "encoder", "vlm"):
        parser.add_argument(f"--{comp}", metavar="DIR", default=None,
                            help=f"use this {comp} checkpoint instead of the bundle's")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8765)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (no authentication is built in)")
    parser.add_argument("--workers", type=int, default=None,
                        help="studies analysed at the same time (default 1; more queue)")
    parser.add_argument("--max-upload-mb", type=float, default=None, help="request size limit")
    parser.add_argument("--max-files", type=int, default=None, help="files per upload limit")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_config_args(parser)


def _app_config(args: argparse.Namespace, cfg: object) -> object:
    import dataclasses

    from echosonar.config.app import AppConfig

    app_cfg = getattr(cfg, "app", None) or AppConfig()
    over = {k: v for k, v in {"host": args.host, "port": args.port, "workers": args.workers,
                              "max_upload_mb": args.max_upload_mb, "max_files": args.max_files,
                              "threads": args.threads}.items() if v is not None}
    return dataclasses.replace(app_cfg, **over)


def config_errors(c: object) -> list[str]:
    """Every server setting outside its sane range (``--port`` and ``app.port`` alike: the
    options land in the same :class:`~echosonar.config.app.AppConfig`)."""
    from echosonar.app.analyze_cli import MAX_NEW_TOKENS, THREADS, range_errors

    errs = range_errors({
        "port (--port / app.port)": (c.port, 1, 65535),
        "workers (--workers / app.workers)": (c.workers, 1, 64),
        "threads (--threads / app.threads)": (c.threads, *THREADS),
        "max_upload_mb (--max-upload-mb / app.max_upload_mb)": (c.max_upload_mb, 0.001, 1 << 20),
        "max_files (--max-files / app.max_files)": (c.max_files, 1, 100_000),
        "app.max_zip_entries": (c.max_zip_entries, 1, 1_000_000),
        "app.max_unzipped_mb": (c.max_unzipped_mb, 0.001, 1 << 22),
        "app.max_zip_entry_mb": (c.max_zip_entry_mb, 0.001, 1 << 22),
        "app.max_zip_ratio": (c.max_zip_ratio, 1, 1e6),
        "app.job_ttl_s": (c.job_ttl_s, 1, 365 * 86400),
        "app.max_jobs": (c.max_jobs, 1, 1_000_000),
    })
    if c.max_new_tokens:  # 0 = the bundle's value
        errs += range_errors({"app.max_new_tokens": (c.max_new_tokens, *MAX_NEW_TOKENS)})
    if c.work_dir:
        from echosonar.io.atomic import unwritable_reason

        why = unwritable_reason(c.work_dir)
        if why:
            errs.append(f"app.work_dir: {why}")
    return errs


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (in use, no such address), or None; checked before the
    bundle loads so the user hears about it at once and without a traceback."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve --host {host}: {e.strerror}"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def run(args: argparse.Namespace) -> int:
    from echosonar.config import ConfigError, config_from_args

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"echosonar serve: {e}", file=sys.stderr)
        return 2
    app_cfg = _app_config(args, cfg)
    errs = config_errors(app_cfg)
    if errs:
        for e in errs:
            print(f"echosonar serve: {e}", file=sys.stderr)
        return 2
    try:
        loopback = ipaddress.ip_address(app_cfg.host).is_loopback
    except ValueError:
        loopback = app_cfg.host == "localhost"
    if not loopback and not args.allow_remote:
        print(f"echosonar serve: refusing to bind {app_cfg.host} without --allow-remote "
              "(the server has no authentication and handles patient data)", file=sys.stderr)
        return 2
    why = port_in_use(app_cfg.host, app_cfg.port)
    if why:
        print(f"echosonar serve: {why}", file=sys.stderr)
        return 2
    import torch
    import uvicorn

    from echosonar.app.bundle import bundle_from_args
    from echosonar.app.pipeline import analyze_study
    from echosonar.app.server import create_app

    torch.set_num_threads(app_cfg.threads)
    bundle = bundle_from_args(args, "serve")
    if bundle is None:
        return 2

    if app_cfg.max_new_tokens:
        bundle.spec.max_new_tokens = int(app_cfg.max_new_tokens)

    def analyze(files, progress):  # noqa: ANN001, ANN202
        return analyze_study(files, bundle, cfg, progress=progress)

    app = create_app(analyze, app_cfg, model_name=bundle.spec.name)
    print(f"EchoSonar serving model {bundle.spec.root} at http://{app_cfg.host}:{app_cfg.port}/ "
          "(research use only — not for diagnosis)", file=sys.stderr)
    uvicorn.run(app, host=app_cfg.host, port=app_cfg.port, log_level="warning")
    return 0
