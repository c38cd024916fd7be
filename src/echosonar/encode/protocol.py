"""The pluggable clip-encoder interface, the adapter point, and the one loading entry point.

Anything with ``dim``, ``n_tokens`` and ``encode(frames, views) -> [B, 1 + N, D]`` is a
:class:`VideoEncoder`; the feature cache, the baselines and the language model only ever see that.

Adapter point — plugging in a stronger encoder (e.g. EchoPrime's MViT-v2-S) takes one factory::

    # mypkg/echoprime_adapter.py
    from echosonar.encode import ModuleEncoder
    def build(path: str):                     # path: whatever your factory wants (or ignore it)
        mvit = load_my_mvit(path)             # an nn.Module [B, 3, T, H, W] -> [B, 512] or map
        return ModuleEncoder(mvit, dim=512, clip_len=16, image_size=224,
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    load_encoder("python:mypkg.echoprime_adapter:build")            # or ...:build@/weights/dir
    echosonar encode CACHE --out FEATURES --encoder python:mypkg.echoprime_adapter:build@/w

or register a checkpoint kind once (``register_encoder("echoprime_mvit", loader)``) so that
``load_encoder(dir)`` dispatches on ``config.json``'s ``kind``. Weights must come from
safetensors (never pickles).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from echosonar.io.checkpoint import CheckpointError, read_checkpoint_config


@runtime_checkable
class VideoEncoder(Protocol):
    """A frozen clip encoder as the rest of EchoSonar sees it.

    Attributes:
        dim: token width D.
        n_tokens: number N of space-time tokens after the global token (may be 0).
    """

    dim: int
    n_tokens: int

    def encode(self, frames: torch.Tensor, views: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """``frames`` float ``[B, T, C, H, W]`` in [0, 1] (C = 1 grey or 3 RGB), ``views`` B
        names from ``taxonomy.CLASSIFIER_VIEWS`` -> float ``[B, 1 + N, D]``, global token first.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able facts about the encoder, stored in the feature index."""
        ...


class ModuleEncoder(nn.Module):
    """Adapter: wrap any ``nn.Module`` taking ``[B, 3, T, H, W]`` as a :class:`VideoEncoder`.

    The wrapped module may return a vector ``[B, D]`` (then N = 0: only the global token), a
    token sequence ``[B, L, D]`` (first = global, the rest average-pooled to ``n_tokens``), or
    a feature map ``[B, D, T', H', W']`` (global = mean, cells pooled to
    ``token_t x token_s x token_s``). Views are ignored unless ``pass_views`` is set, in which
    case the module is called as ``module(x, views)``.
    """

    def __init__(self, module: nn.Module, dim: int, clip_len: int = 16, image_size: int = 112,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 token_t: int = 2, token_s: int = 2, n_seq_tokens: int = 8,
                 pass_views: bool = False, name: str = "module") -> None:
        super().__init__()
        self.module, self.dim, self.clip_len, self.image_size = module, dim, clip_len, image_size
        self.token_t, self.token_s, self.n_seq_tokens = token_t, token_s, n_seq_tokens
        self.pass_views, self.name = pass_views, name
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)
        self.n_tokens = -1  # known after the first call (depends on the module's output kind)

    def describe(self) -> dict[str, Any]:
        return {"kind": "module_adapter", "name": self.name, "dim": self.dim,
                "n_tokens": self.n_tokens, "clip_len": self.clip_len,
                "image_size": self.image_size}

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, views: Sequence[str] | torch.Tensor) -> torch.Tensor:
        from echosonar.encode.models import prepare_frames

        x = prepare_frames(frames, self.clip_len, self.image_size) / 2.0 + 0.5  # back to [0, 1]
        x = (x - self.mean) / self.std
        out = self.module(x, views) if self.pass_views else self.module(x)
        if out.ndim == 2:
            tokens = out[:, None]
        elif out.ndim == 3:
            rest = out[:, 1:].transpose(1, 2)
            cells = F.adaptive_avg_pool1d(rest, self.n_seq_tokens).transpose(1, 2)
            tokens = torch.cat([out[:, :1], cells], 1) if out.shape[1] > 1 else out[:, :1]
        elif out.ndim == 5:
            glob = out.mean(dim=(2, 3, 4))[:, None]
            cells = F.adaptive_avg_pool3d(out, (self.token_t, self.token_s, self.token_s))
            tokens = torch.cat([glob, cells.flatten(2).transpose(1, 2)], 1)
        else:
            raise ValueError(f"{self.name}: wrapped module returned shape {tuple(out.shape)}; "
                             "expected [B, D], [B, L, D] or [B, D, T, H, W]")
        if tokens.shape[-1] != self.dim:
            raise ValueError(f"{self.name}: wrapped module gives width {tokens.shape[-1]}, "
                             f"adapter declared dim={self.dim}")
        self.n_tokens = tokens.shape[1] - 1
        return tokens


_LOADERS: dict[str, Callable[[str | Path], VideoEncoder]] = {}


def register_encoder(kind: str, loader: Callable[[str | Path], VideoEncoder]) -> None:
    """Make ``load_encoder(dir)`` build checkpoints whose ``config.json`` kind is ``kind``."""
    _LOADERS[kind] = loader


def _load_clip_encoder(path: str | Path) -> VideoEncoder:
    from echosonar.encode.models import ClipEncoder

    return ClipEncoder.from_pretrained(path)


register_encoder("clip_encoder", _load_clip_encoder)


def load_encoder(path: str | Path, device: str = "cpu") -> VideoEncoder:
    """The one way to get a frozen encoder, in eval mode.

    ``path`` is either a checkpoint folder (``config.json`` + ``model.safetensors``; its
    ``kind`` picks a registered loader, default ``clip_encoder``), or
    ``python:package.module:factory[@arg]`` — the adapter point: ``factory(arg)`` must return a
    :class:`VideoEncoder`.
    """
    spec = str(path)
    if spec.startswith("python:"):
        target, _, arg = spec[len("python:"):].partition("@")
        mod_name, _, fn_name = target.partition(":")
        if not mod_name or not fn_name:
            raise ValueError(f"encoder spec {spec!r} must look like python:pkg.module:factory")
        try:
            factory = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"encoder spec {spec!r}: cannot import {target}: {e}") from e
        enc = factory(arg) if arg else factory()
    else:
        data = read_checkpoint_config(path)
        kind = data["kind"]
        if kind not in _LOADERS:
            raise CheckpointError(f"{path} holds a {kind!r} checkpoint; no encoder loader is "
                                  f"registered for it (known: {sorted(_LOADERS)})")
        enc = _LOADERS[kind](path)
    if not isinstance(enc, VideoEncoder):
        raise TypeError(f"{spec}: {type(enc).__name__} does not implement VideoEncoder "
                        "(needs dim, n_tokens, encode(frames, views), describe())")
    if isinstance(enc, nn.Module):
        enc = enc.to(device).eval()
        for p in enc.parameters():
            p.requires_grad_(False)
    return enc
