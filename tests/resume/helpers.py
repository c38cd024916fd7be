"""Kill-and-resume harness: run a command in a subprocess, SIGKILL it at a point chosen by a
seeded RNG once a progress marker shows it is mid-run, rerun it, compare with a clean run.

The kill point is "after the k-th progress marker, plus a random delay": k and the delay come from
``numpy.random.default_rng(seed)``, so a failure names a reproducible point. A run that finishes
before it could be killed fails the test (the case would prove nothing).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: temporaries written by echosonar.io.atomic (and any older ``.tmp`` / ``.old`` leftovers)
TEMP_NAME = re.compile(r"^\..*\.(tmp(\.[^/]*)?|old)$")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
GUARD_S = 300.0  # a hung child fails the test instead of hanging the suite (not a speed check)


def echosonar(*args: str) -> list[str]:
    """The command line of ``echosonar ARGS`` in this interpreter."""
    return [sys.executable, "-m", "echosonar.cli", *map(str, args)]


def run_ok(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=GUARD_S)
    assert p.returncode == 0, f"{cmd[3:]} exited {p.returncode}:\n{p.stderr[-3000:]}"
    return p


def kill_after(cmd: list[str], progress: Callable[[], int], at: int, delay_s: float,
               cwd: Path | None = None) -> None:
    """Start ``cmd``; once ``progress() >= at`` wait ``delay_s`` and SIGKILL it. Asserts that it
    was killed (still running), not finished."""
    err_file = tempfile.TemporaryFile()  # a pipe could fill up and stall the child
    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err_file)
    t0 = time.monotonic()
    try:
        while progress() < at:
            if proc.poll() is not None:
                err_file.seek(0)
                err = err_file.read().decode(errors="replace")[-3000:]
                raise AssertionError(f"{cmd[3:]} ended (rc {proc.returncode}) before progress "
                                     f"{at} (reached {progress()}); cannot test a kill:\n{err}")
            if time.monotonic() - t0 > GUARD_S:
                raise AssertionError(f"{cmd[3:]} made no progress")
            time.sleep(0.005)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err_file.close()
    assert proc.returncode == -signal.SIGKILL, \
        f"{cmd[3:]} finished (rc {proc.returncode}) before the kill; pick an earlier point"


def kill_point(seed: int, lo: int, hi: int, max_delay_s: float) -> tuple[int, float]:
    """``(progress marker k in [lo, hi], delay in [0, max_delay_s))`` from a seeded RNG."""
    rng = np.random.default_rng(seed)
    return int(rng.integers(lo, hi + 1)), float(rng.uniform(0.0, max_delay_s))


def temporaries(root: Path) -> list[Path]:
    """Half-written leftovers under ``root`` (none may survive a resumed run)."""
    return [p for p in root.rglob(".*") if TEMP_NAME.match(p.name)]


def lines(path: Path) -> int:
    try:
        return len(path.read_bytes().splitlines())
    except FileNotFoundError:
        return 0


def count(root: Path, pattern: str) -> int:
    return len(list(root.glob(pattern))) if root.exists() else 0
