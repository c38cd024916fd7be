"""All EchoSonar configs in one place.

``EchoSonarConfig`` nests one dataclass per stage; each stage's fields live in its own module
here (``config/sim.py``, ``config/detect.py``, ...). Load with :func:`load_config`, override with
``--set section.key=value``, and save the resolved config next to every run's outputs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from echosonar.config.app import AppConfig
from echosonar.config.base import (
    ConfigError,
    apply_overrides,
    describe,
    from_dict,
    load_yaml,
    opt,
    save_yaml,
    section,
    to_dict,
)
from echosonar.config.dataset import DatasetConfig
from echosonar.config.detect import DetectConfig
from echosonar.config.encode import EncodeConfig
from echosonar.config.evaluate import EvalConfig
from echosonar.config.grpo import GRPOConfig
from echosonar.config.ingest import IngestConfig
from echosonar.config.reason import HeadFitConfig, LMConfig, SFTConfig
from echosonar.config.sim import SimConfig

__all__ = [
    "AppConfig", "ConfigError", "DatasetConfig", "DetectConfig", "EchoSonarConfig",
    "EncodeConfig", "EvalConfig", "GRPOConfig", "HeadFitConfig", "IngestConfig", "LMConfig", "SFTConfig", "SimConfig",
    "add_config_args", "apply_overrides", "config_from_args",
    "describe", "from_dict", "load_config", "load_yaml", "opt", "save_yaml", "section", "to_dict",
]


@dataclass
class EchoSonarConfig:
    """The whole pipeline's configuration, one section per stage."""

    sim: SimConfig = section(SimConfig, "study simulator")
    ingest: IngestConfig = section(IngestConfig, "DICOM/video ingest and preprocessing")
    dataset: DatasetConfig = section(DatasetConfig, "your own studies + labels -> a training "
                                                    "dataset (dataset build)")
    detect: DetectConfig = section(DetectConfig, "structure detector")
    encode: EncodeConfig = section(EncodeConfig, "spatiotemporal video encoder and baselines")
    lm: LMConfig = section(LMConfig, "language model")
    sft: SFTConfig = section(SFTConfig, "supervised fine-tuning")
    head: HeadFitConfig = section(HeadFitConfig, "label-head refit on a frozen LM (train head, "
                                                 "end of SFT)")
    grpo: GRPOConfig = section(GRPOConfig, "GRPO reinforcement learning")
    eval: EvalConfig = section(EvalConfig, "evaluation")
    app: AppConfig = section(AppConfig, "analyze / serve application")


def load_config(path: str | Path | None = None,
                overrides: list[str] | None = None) -> EchoSonarConfig:
    """Defaults, then the YAML file at ``path`` (partial is fine), then ``overrides``.

    >>> load_config(overrides=["sft.lr=3e-4"]).sft.lr
    0.0003
    """
    return load_yaml(EchoSonarConfig, path, overrides)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.yaml`` and repeatable ``--set section.key=value`` to a parser."""
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="YAML config (partial is fine; defaults fill the rest)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set sft.lr=3e-4 (repeatable)")


def config_from_args(args: argparse.Namespace) -> EchoSonarConfig:
    return load_config(getattr(args, "config", None), getattr(args, "overrides", None))
