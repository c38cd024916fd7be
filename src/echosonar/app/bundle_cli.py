"""``echosonar bundle``: assemble a model bundle from separately trained checkpoints.

    echosonar bundle --out runs/bundle --detector runs/detector --encoder runs/encoder \
        --vlm runs/grpo/final [--view-classifier runs/view] [--features data/features] [--copy]
    echosonar bundle --ship --out models/echosonar-r --view-classifier runs/view \
        --detector runs/detector --encoder runs/encoder --vlm runs/sft_s0/model \
        --features features_e2e --provenance recipe="..."      # the shipped, checksummed copy
    echosonar bundle --verify models/echosonar-r    # check CHECKSUMS.sha256
    echosonar bundle --rehash models/echosonar-r    # rewrite it after editing MODEL_CARD.md
    echosonar bundle --ship --out models/echosonar-r --view-classifier runs/new_view \
        --detector models/echosonar-r/detector --encoder models/echosonar-r/encoder \
        --vlm models/echosonar-r/vlm --thresholds-from models/echosonar-r   # swap one part

``analyze`` and ``serve`` read one folder (``bundle.json`` + components); ``quickstart --train``
writes one, and this command makes one from your own runs. With ``--features`` the per-label
thresholds are chosen on that cache's val split (max balanced accuracy of the VLM's label head,
the baselines' rule, the same thresholds ``evaluate --set eval.decoding=guided`` uses on that
cache); without it they are 0.5. ``--copy`` copies the checkpoints into the bundle so it can be
moved or zipped; otherwise the bundle points at them (absolute paths). ``--ship`` writes the
compact copy kept in the repository: only ``config.json``, ``model.safetensors`` (floating
weights in float16; loaders upcast to float32) and tokenizer JSON per component, no training
state, ``CHECKSUMS.sha256`` over every file (``MODEL_CARD.md`` and other ``*.md`` already in
``--out`` are kept), at most 30 MB. Every component is loaded once before anything is written,
so a wrong folder fails here with a clear message and leaves no half-written bundle.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

#: provenance keys the command writes itself
RESERVED = ("root", "components", "thresholds", "max_new_tokens", "sources", "thresholds_note",
            "components_shipped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--out", metavar="BUNDLE", help="bundle folder to write (required "
                        "unless --verify/--rehash)")
    parser.add_argument("--detector", metavar="DIR", help="detector checkpoint (required)")
    parser.add_argument("--encoder", metavar="DIR", help="encoder checkpoint (required)")
    parser.add_argument("--vlm", metavar="DIR",
                        help="EchoSonar-R checkpoint (SFT model/ or GRPO final/) (required)")
    parser.add_argument("--view-classifier", metavar="DIR", default=None,
                        help="view classifier checkpoint (optional: without it every clip "
                             "must come with its view)")
    parser.add_argument("--features", metavar="FEATURES", default=None,
                        help="feature cache whose val split picks the thresholds")
    parser.add_argument("--thresholds-from", metavar="BUNDLE", default=None,
                        help="take the thresholds of this bundle instead (e.g. re-shipping "
                             "models/echosonar-r with a new view classifier; the VLM must be "
                             "the same)")
    parser.add_argument("--copy", action="store_true",
                        help="copy the checkpoints into the bundle folder (movable bundle)")
    parser.add_argument("--ship", action="store_true",
                        help="write the compact shipped copy: float16 weights, no training "
                             "state, CHECKSUMS.sha256, at most 30 MB (replaces --out, keeping "
                             "its *.md files)")
    parser.add_argument("--provenance", action="append", default=[], metavar="KEY=VALUE",
                        help="free-form provenance stored in bundle.json (repeatable)")
    parser.add_argument("--verify", metavar="BUNDLE", default=None,
                        help="only verify BUNDLE's CHECKSUMS.sha256 and load it; exit 1 on "
                             "a mismatch")
    parser.add_argument("--rehash", metavar="BUNDLE", default=None,
                        help="only rewrite BUNDLE's CHECKSUMS.sha256 (after editing its model "
                             "card)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation budget stored in the bundle (default: eval.max_new_tokens)")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from echosonar.app import stages
    from echosonar.app.bundle import BundleError, read_bundle_spec, val_thresholds, write_bundle
    from echosonar.config import config_from_args

    if args.verify or args.rehash:
        return _verify_or_rehash(args)
    missing = [f"--{n}" for n in ("out", "detector", "encoder", "vlm") if not getattr(args, n)]
    if missing:
        raise SystemExit(f"error: echosonar bundle needs {', '.join(missing)} (or --verify / "
                         "--rehash BUNDLE)")
    provenance = {}
    for item in args.provenance:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --provenance {item!r}: expected KEY=VALUE")
        if key in RESERVED:
            raise SystemExit(f"error: --provenance {key}=...: {key!r} is reserved")
        provenance[key] = value
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
    if args.features and args.thresholds_from:
        raise SystemExit("error: give --features or --thresholds-from, not both")
    if args.thresholds_from:
        try:
            spec = read_bundle_spec(args.thresholds_from)
        except BundleError as e:
            raise SystemExit(f"error: --thresholds-from: {e}") from e
        if spec.thresholds_source != "bundle":
            raise SystemExit(f"error: --thresholds-from {args.thresholds_from}: that bundle has "
                             "no thresholds of its own")
        thresholds = dict(spec.thresholds)
        previous = spec.meta.get("provenance") or {}
        note = previous.get("thresholds_note") or "taken from another bundle"
        # keep the other bundle's free-form provenance (recipe, data, ...) unless given anew
        provenance = {**{k: v for k, v in previous.items() if k not in RESERVED},
                      **provenance}
    if args.features:
        from echosonar.io.features import iter_features

        thresholds, note = val_thresholds(loaded["vlm"], list(iter_features(args.features, "val")))
    max_new = args.max_new_tokens or int(cfg.eval.max_new_tokens)
    if args.ship:
        from echosonar.app.bundle import bundle_size_mb, ship_bundle

        try:
            ship_bundle(out, components, thresholds, max_new, provenance={
                "thresholds_note": note, "sources": {k: str(v) for k, v in given.items() if v},
                **provenance})
            spec = read_bundle_spec(out)  # verifies the checksums just written
        except BundleError as e:
            raise SystemExit(f"error: {e}") from e
        print(f"shipped bundle written to {out}: {bundle_size_mb(out):.2f} MB, "
              f"{len(spec.components)} components, weights float16, {note}; checksums in "
              f"{out / 'CHECKSUMS.sha256'}")
        return 0
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
    write_bundle(out, components, thresholds, max_new, thresholds_note=note,
                 sources={k: str(Path(v).resolve()) for k, v in given.items() if v},
                 **provenance)
    try:
        read_bundle_spec(out)
    except BundleError as e:  # pragma: no cover - write_bundle and the reader disagree
        raise SystemExit(f"error: the written bundle does not read back: {e}") from e
    print(f"bundle written to {out} ({note}); analyze with: echosonar analyze STUDY --model {out}")
    return 0


def _verify_or_rehash(args: argparse.Namespace) -> int:
    import sys

    from echosonar.app.bundle import BundleError, load_bundle, verify_checksums, write_checksums

    if args.rehash:
        path = write_checksums(args.rehash)
        print(f"wrote {path}")
        return 0
    try:
        n = verify_checksums(args.verify)
        load_bundle(args.verify)
    except BundleError as e:
        print(f"echosonar bundle: {e}", file=sys.stderr)
        return 1
    print(f"{args.verify}: {n} files match CHECKSUMS.sha256; every component loads")
    return 0
