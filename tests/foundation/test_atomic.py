"""io.atomic under kills: folder replacement never leaves the target missing, temporaries of
dead writers are cleaned (those of live ones kept), unusable output folders are named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from echosonar.io import atomic
from echosonar.io.atomic import (
    atomic_dir,
    atomic_write_text,
    remove_stale_temps,
    unwritable_reason,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (SIGKILLed)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    p.send_signal(signal.SIGKILL)
    p.wait()
    return p.pid


def test_atomic_dir_replaces_in_place_and_keeps_the_old_until_then(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        assert (target / "a").read_text() == "1"  # still there while the new one is written
        (tmp / "a").write_text("2")
    assert (target / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_dir_fallback_restores_a_half_swapped_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # non-Linux path
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    os.replace(target, tmp_path / ".ckpt.old")  # killed between the two renames
    with pytest.raises(RuntimeError):
        with atomic_dir(target):
            assert (target / "a").read_text() == "1"  # restored before anything else
            raise RuntimeError("writer failed")
    assert (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
    assert (target / "a").read_text() == "2" and not (tmp_path / ".ckpt.old").exists()


def test_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    stale_file = tmp_path / f".log.{dead}.abcd1234.tmp.json"
    stale_dir = tmp_path / "sub" / f".checkpoint.{dead}.abcd1234.tmp"
    busy = tmp_path / f".log.{live}.abcd1234.tmp.json"
    user = tmp_path / ".notes.tmp"  # not ours: no pid in the name
    stale_dir.mkdir(parents=True)
    (stale_dir / "model.safetensors").write_bytes(b"half")
    for p in (stale_file, busy, user):
        p.write_text("x")
    atomic_write_text(tmp_path / "log.json", "{}")  # a write cleans its own target's leftovers
    assert not stale_file.exists() and busy.exists() and user.exists()
    assert stale_dir.exists()
    assert remove_stale_temps(tmp_path) == 1 and not stale_dir.exists()
    assert busy.exists() and user.exists() and (tmp_path / "log.json").read_text() == "{}"


def test_unwritable_reason_names_the_obstacle(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert unwritable_reason(tmp_path / "new" / "deeper") is None
    assert "exists and is not a folder" in unwritable_reason(f)
    assert "is a file, not a folder" in unwritable_reason(f / "sub" / "x")
    with pytest.raises(NotADirectoryError, match="file.txt exists and is not a folder"):
        atomic_write_text(f / "out.json", "{}")
