"""Checkpoints: ``model.safetensors`` (tensors) + ``config.json`` (config, metadata, checksum).

Never pickle. Weights saved in float16/bfloat16 load as float32 (:func:`load_checkpoint`).
``config.json`` stores the SHA-256 of the weights file, so a tampered or truncated
checkpoint is refused with a clear :class:`CheckpointError` instead of loading garbage.

Every trainable model subclasses :class:`Pretrained` (an ``nn.Module`` mixin) and gets
``save_pretrained(dir)`` / ``from_pretrained(dir)``. Training state for exact resume (optimizer,
scheduler, RNG, step) goes through :func:`save_training_state` / :func:`load_training_state`.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from echosonar.io.atomic import atomic_write_bytes, atomic_write_json

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "training_state.safetensors"
STATE_META = "training_state.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, tampered with or of the wrong kind."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> str:
    """Atomically write tensors to a safetensors file; return its SHA-256."""
    path = Path(path)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # serialised in memory, then one atomic write (save_file would stage its own unnamed
    # ".tmpXXXXXX" beside the target, which a kill leaves behind)
    atomic_write_bytes(path, save(flat))
    return _sha256(path)


def load_tensors(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its SHA-256 when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    if sha256 is not None and _sha256(path) != sha256:
        raise CheckpointError(f"checkpoint weights {path} do not match the checksum in "
                              f"{CONFIG} (file truncated or modified)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint weights {path}: {e}") from e


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], kind: str,
                    config: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digest = save_tensors(directory / WEIGHTS, tensors)
    atomic_write_json(directory / CONFIG, {
        "format_version": FORMAT_VERSION, "kind": kind, "config": config,
        "sha256": digest, "meta": meta or {},
    })
    return directory


def read_checkpoint_config(directory: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and validate ``config.json``; ``kind`` (e.g. "detector") must match when given."""
    directory = Path(directory)
    cfg_path = directory / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"not a checkpoint folder (no {CONFIG}): {directory}")
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or "config" not in data or "kind" not in data:
        raise CheckpointError(f"{cfg_path} is not an EchoSonar checkpoint config")
    if kind is not None and data["kind"] != kind:
        raise CheckpointError(f"{directory} holds a {data['kind']!r} checkpoint, "
                              f"expected {kind!r}")
    return data


def load_checkpoint(directory: str | Path,
                    kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return ``(tensors, config_json)`` after checking kind and checksum.

    Half-precision floating tensors (a shipped bundle stores its weights in float16) are
    upcast to float32 here, so every model runs in float32 whatever the file holds.
    """
    data = read_checkpoint_config(directory, kind)
    tensors = load_tensors(Path(directory) / WEIGHTS, data.get("sha256"))
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
            for k, v in tensors.items()}, data


class Pretrained:
    """Mixin for ``nn.Module`` models with a dataclass ``self.config``.

    Subclasses set ``checkpoint_kind`` and ``config_class`` and build themselves from
    ``cls(config)``. ``from_pretrained`` rebuilds the config, then loads weights strictly.
    """

    checkpoint_kind: ClassVar[str] = "model"
    config_class: ClassVar[type]

    def save_pretrained(self, directory: str | Path, meta: dict[str, Any] | None = None) -> Path:
        from echosonar.config.base import to_dict

        module: torch.nn.Module = self  # type: ignore[assignment]
        return save_checkpoint(directory, dict(module.state_dict()), self.checkpoint_kind,
                               to_dict(self.config), meta)  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> Any:
        from echosonar.config.base import ConfigError, from_dict

        tensors, data = load_checkpoint(directory, cls.checkpoint_kind)
        try:
            config = from_dict(cls.config_class, data["config"])
        except ConfigError as e:
            raise CheckpointError(f"{directory}: config does not fit {cls.__name__}: {e}") from e
        model = cls(config)
        try:
            model.load_state_dict(tensors, strict=True)  # type: ignore[attr-defined]
        except RuntimeError as e:
            raise CheckpointError(f"{directory}: weights do not fit {cls.__name__}: {e}") from e
        return model.to(map_location)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Training state, for exact resume
# ---------------------------------------------------------------------------------------------

def save_training_state(directory: str | Path, optimizer: torch.optim.Optimizer,
                        scheduler: Any | None, step: int, extra: dict[str, Any] | None = None,
                        extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Save optimizer + scheduler + RNG state + step (tensors in safetensors, rest in JSON)."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, st in opt_state["state"].items():
        for name, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt.{pid}.{name}"] = val
            else:
                scalars[f"{pid}.{name}"] = val
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v
    digest = save_tensors(directory / STATE, tensors)
    np_state = np.random.get_state()
    meta = {
        "step": step, "sha256": digest,
        "param_groups": opt_state["param_groups"], "opt_scalars": scalars,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng_python": _jsonable(random.getstate()),
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "extra": extra or {},
    }
    atomic_write_json(directory / STATE_META, meta, indent=None)


def load_training_state(directory: str | Path, optimizer: torch.optim.Optimizer,
                        scheduler: Any | None = None) -> dict[str, Any]:
    """Restore what :func:`save_training_state` wrote; returns the JSON meta (with ``step``)."""
    directory = Path(directory)
    meta_path = directory / STATE_META
    if not meta_path.is_file():
        raise CheckpointError(f"no training state in {directory}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON: {e}") from e
    tensors = load_tensors(directory / STATE, meta["sha256"])
    state: dict[Any, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for key, val in meta["opt_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tupled(meta["rng_python"]))
    n = meta["rng_numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    meta["extra_tensors"] = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    return x


def _tupled(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_tupled(v) for v in x)
    return x

