"""``echosonar simulate``: write a simulated study set, or a contact-sheet preview of one study.

    echosonar simulate --studies 200 --out data/sim [--preset shifted] [--seed 1] [--workers 2]
    echosonar simulate --preview 7 --out sheet.png [--preset shifted]
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--studies", type=int, default=None, help="number of studies "
                        "(default: sim.studies)")
    parser.add_argument("--out", required=True, help="output folder (or PNG path with "
                        "--preview)")
    parser.add_argument("--preset", default=None, help="scanner preset: default or shifted")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: sim.seed)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument("--mp4", action="store_true", help="also write MP4 copies")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing study set in --out first")
    parser.add_argument("--preview", type=int, default=None, metavar="STUDY_INDEX",
                        help="write a contact sheet PNG of this study to --out instead")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from echosonar.config import ConfigError, config_from_args
    from echosonar.simulate.presets import SimConfigError, resolve

    try:
        cfg = config_from_args(args).sim
        changes = {k: v for k, v in (("studies", args.studies), ("preset", args.preset),
                                     ("seed", args.seed), ("workers", args.workers))
                   if v is not None}
        if args.mp4:
            changes["write_mp4"] = True
        cfg = resolve(dataclasses.replace(cfg, **changes))
        if args.preview is not None:
            if args.preview < 0:
                raise SimConfigError(f"--preview must be a study index >= 0, got {args.preview}")
            from echosonar.simulate.preview import contact_sheet

            path = contact_sheet(cfg, args.preview, args.out)
            print(f"wrote contact sheet {path}")
            return 0
        from echosonar.simulate.writer import write_study_set

        write_study_set(args.out, cfg, overwrite=args.overwrite, log=print)
        return 0
    except (ConfigError, SimConfigError) as e:
        print(f"echosonar simulate: {e}", file=sys.stderr)
        return 2
