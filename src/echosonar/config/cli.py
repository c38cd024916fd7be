"""``echosonar config``: print the resolved config as YAML, or describe every field."""

from __future__ import annotations

import argparse

from echosonar.config import EchoSonarConfig, add_config_args, config_from_args, describe, to_dict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    parser.add_argument("--describe", action="store_true",
                        help="list every field with its default and help text")


def run(args: argparse.Namespace) -> int:
    import yaml

    if args.describe:
        for name, default, help_text in describe(EchoSonarConfig):
            print(f"{name:<32} {default:<28} {help_text}")
        return 0
    print(yaml.safe_dump(to_dict(config_from_args(args)), sort_keys=False), end="")
    return 0
