"""``echosonar bundle``: assemble a model bundle from separately trained checkpoints.

    echosonar bundle --out runs/bundle --detector runs/detector --encoder runs/encoder \
        --vlm runs/grpo/final [--view-classifier runs/view] [--features data/features] [--copy]

``analyze`` and ``serve`` read one folder (``bundle.json`` + components); ``quickstart`` writes
one, and this command makes one from your own runs. With ``--features`` the per-label thresholds
are chosen on that cache's val split (max balanced accuracy of the VLM's label head, the
baselines' rule); without it they are 0.5. ``--copy`` copies the checkpoints into the bundle so
it can be moved or zipped; otherwise the bundle points at them (absolute paths). Every component
is loaded once before anything is written, so a wrong folder fails here with a clear message and
leaves no half-written bundle.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    parser.add_argument("--detector", required=True, metavar="DIR", help="detector checkpoint")
    parser.add_argument("--encoder", required=True, metavar="DIR", help="encoder checkpoint")
    parser.add_argument("--vlm", required=True, metavar="DIR",
                        help="EchoSonar-R checkpoint (SFT model/ or GRPO final/)")
    parser.add_argument("--view-classifier", metavar="DIR", default=None,
                        help="view classifier checkpoint (optional: without it every clip "
                             "must come with its view)")
    parser.add_argument("--features", metavar="FEATURES", default=None,
                        help="feature cache whose val split picks the thresholds")
    parser.add_argument("--copy", action="store_true",
                        help="copy the checkpoints into the bundle folder (movable bundle)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation budget stored in the bundle (default: eval.max_new_tokens)")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from echosonar.app import stages
    from echosonar.app.bundle import BundleError, read_bundle_spec, val_thresholds, write_bundle
    from echosonar.config import config_from_args

    cfg = config_from_args(args)
    out = Path(args.out)
    given = {"detector": args.detector, "encoder": args.encoder, "vlm": args.vlm,
             "view_classifier": args.view_classifier}
    components = {k: Path(v) for k, v in given.items() if v}
    loaded = {}
    for name, path in components.items():
        if not path.is_dir():
            raise SystemExit(f"error: --{name.replace('_', '-')} {path}: not a folder")
        try:
            loaded[name] = getattr(stages, f"load_{name}")(path)
        except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear message
            raise SystemExit(f"error: cannot load {name} from {path}: {type(e).__name__}: {e}"
                             ) from e
    thresholds, note = None, "no --features: thresholds 0.5"
    if args.features:
        from echosonar.io.features import iter_features

        thresholds, note = val_thresholds(loaded["vlm"], list(iter_features(args.features, "val")))
    out.mkdir(parents=True, exist_ok=True)
    if args.copy:
        for name, path in list(components.items()):
            dest = out / name
            tmp = out / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(path, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
            components[name] = dest
    max_new = args.max_new_tokens or int(cfg.eval.max_new_tokens)
    write_bundle(out, components, thresholds, max_new, thresholds_note=note,
                 sources={k: str(Path(v).resolve()) for k, v in given.items() if v})
    try:
        read_bundle_spec(out)
    except BundleError as e:  # pragma: no cover - write_bundle and the reader disagree
        raise SystemExit(f"error: the written bundle does not read back: {e}") from e
    print(f"bundle written to {out} ({note}); analyze with: echosonar analyze STUDY --model {out}")
    return 0
