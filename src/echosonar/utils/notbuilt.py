"""Placeholder for commands whose stage has not landed yet: a clear error, never a fake result."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def not_built(command: str, issue: int) -> tuple[Callable, Callable]:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args: argparse.Namespace) -> int:
        print(f"echosonar {command}: not built yet (tracked in issue {issue})", file=sys.stderr)
        return 3

    return add_arguments, run
