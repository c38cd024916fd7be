"""Reproducibility: one seeding helper used everywhere, and run provenance."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

_PACKAGES = ("echosonar", "torch", "transformers", "tokenizers", "safetensors", "numpy",
             "pydicom", "av", "scipy", "scikit-learn")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ["PYTHONHASHSEED"] = str(seed)
    import torch

    torch.manual_seed(seed)


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_info(seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance for a run's outputs: seed, git commit, package versions, host facts."""
    return {
        "seed": seed, "git_commit": git_commit(), "versions": package_versions(),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra,
    }


def pick_device(prefer: str = "auto") -> str:
    """"cuda" when available (or asked for), else "cpu". Nothing in EchoSonar assumes CUDA."""
    import torch

    if prefer == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if prefer.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no GPU is available")
    return prefer
