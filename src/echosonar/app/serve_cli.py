"""``echosonar serve``: the upload form, report page and JSON API on localhost (FastAPI).

    echosonar serve --model runs/quickstart                 # http://127.0.0.1:8765/
    echosonar serve --model BUNDLE --port 9000 --workers 2 --max-upload-mb 256

It binds to 127.0.0.1 unless ``--host`` says otherwise, and a non-loopback address also needs
``--allow-remote`` (the server has no authentication; put it behind one before exposing it).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--model", metavar="BUNDLE", default="runs/quickstart",
                        help="model bundle folder (default: runs/quickstart)")
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


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from echosonar.app.bundle import bundle_from_args
    from echosonar.app.pipeline import analyze_study
    from echosonar.app.server import create_app
    from echosonar.config import ConfigError, config_from_args

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"echosonar serve: {e}", file=sys.stderr)
        return 2
    app_cfg = _app_config(args, cfg)
    try:
        loopback = ipaddress.ip_address(app_cfg.host).is_loopback
    except ValueError:
        loopback = app_cfg.host == "localhost"
    if not loopback and not args.allow_remote:
        print(f"echosonar serve: refusing to bind {app_cfg.host} without --allow-remote "
              "(the server has no authentication and handles patient data)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, app_cfg.threads))
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
