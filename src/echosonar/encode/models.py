"""The default clip encoder: a spatiotemporal network from a clip to ``[1 + N, D]`` tokens.

Two designs share one readout, so their comparison (docs/notes/encode.md) isolates the body:

* ``tubelet`` (default) — non-overlapping 2 x 8 x 8 tubelets, linearly embedded
  (16 x 64 x 64 -> 8 x 8 x 8 = 512 tokens), then factorised attention (spatial within a time
  step, then temporal per cell, then MLP), as in ViViT model 3 / TimeSformer "divided" attention.
* ``conv21d`` — a (2+1)D conv stem (R(2+1)D: a 4 x 4 spatial patchify conv then a temporal conv
  halving time, then a 3 x 3 stride-2 spatial + temporal stage -> 8 x 8 x 8), then a temporal
  transformer (attention over time per spatial cell; space is mixed by the convs).

Both first standardise each pixel with a per-view mean / std image of the training clips.

Readout (both): the global token is a learned, view-conditioned query attending over the whole
grid plus a position-aware linear summary of the (narrowly projected) grid; the N space-time
tokens are the grid average-pooled to ``token_t x token_s x token_s`` cells (default
2 x 2 x 2 = 8: systole/diastole halves x image quadrants — in an apical view the quadrants are
roughly the four chambers). Every clip enters with 3 channels (grey B-mode is
replicated, colour Doppler keeps its RGB) and a view embedding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from echosonar.config.encode import EncoderModelConfig
from echosonar.io.checkpoint import Pretrained
from echosonar.taxonomy import CLASSIFIER_VIEWS

VIEW_INDEX: dict[str, int] = {v: i for i, v in enumerate(CLASSIFIER_VIEWS)}
ARCHS = ("conv21d", "tubelet")


def view_indices(views: Sequence[str] | torch.Tensor, device: torch.device | str = "cpu",
                 ) -> torch.Tensor:
    """View names (``taxonomy.CLASSIFIER_VIEWS``) -> LongTensor ``[B]``; tensors pass through."""
    if torch.is_tensor(views):
        return views.to(device=device, dtype=torch.long)
    try:
        return torch.tensor([VIEW_INDEX[v] for v in views], dtype=torch.long, device=device)
    except KeyError as e:
        raise ValueError(f"unknown view {e.args[0]!r}; known: {', '.join(CLASSIFIER_VIEWS)}"
                         ) from None


def prepare_frames(frames: torch.Tensor, clip_len: int, image_size: int) -> torch.Tensor:
    """``[B, T, C, H, W]`` in [0, 1] with C in {1, 3} -> ``[B, 3, clip_len, S, S]`` in [-1, 1].

    Grey clips are replicated to 3 channels so one network reads B-mode and colour Doppler
    alike; colour keeps its RGB (the jets are only visible as colour). Frames are resampled to
    ``clip_len`` by nearest index (real frames, no blending) and resized bilinearly.
    """
    if frames.ndim != 5:
        raise ValueError(f"frames must be [B, T, C, H, W], got shape {tuple(frames.shape)}")
    b, t, c, h, w = frames.shape
    if c == 1:
        frames = frames.expand(b, t, 3, h, w)
    elif c != 3:
        raise ValueError(f"frames must have 1 (B-mode) or 3 (RGB colour) channels, got {c}")
    frames = frames.float()
    if t != clip_len:
        idx = torch.linspace(0, t - 1, clip_len, device=frames.device).round().long()
        frames = frames[:, idx]
    if (h, w) != (image_size, image_size):
        flat = frames.reshape(b * clip_len, 3, h, w)
        flat = F.interpolate(flat, size=(image_size, image_size), mode="bilinear",
                             align_corners=False)
        frames = flat.reshape(b, clip_len, 3, image_size, image_size)
    return (frames.permute(0, 2, 1, 3, 4) - 0.5) * 2.0


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float) -> None:
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, dim), nn.Dropout(dropout))


class Block(nn.Module):
    """Pre-norm transformer block over ``[B, L, D]``."""

    def __init__(self, dim: int, heads: int, ratio: float, dropout: float) -> None:
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = Mlp(dim, ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class FactorisedBlock(nn.Module):
    """Divided attention over a grid ``[B, T, S, D]``: spatial, then temporal, then MLP."""

    def __init__(self, dim: int, heads: int, ratio: float, dropout: float) -> None:
        super().__init__()
        self.ns, self.nt, self.nm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.sattn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.tattn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.mlp = Mlp(dim, ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, s, d = x.shape
        h = self.ns(x).reshape(b * t, s, d)
        x = x + self.sattn(h, h, h, need_weights=False)[0].reshape(b, t, s, d)
        h = self.nt(x).transpose(1, 2).reshape(b * s, t, d)
        x = x + self.tattn(h, h, h, need_weights=False)[0].reshape(b, s, t, d).transpose(1, 2)
        return x + self.mlp(self.nm(x))


def conv21d_stem(widths: Sequence[int], patch: int) -> nn.Sequential:
    """(2+1)D stem: per stage a spatial conv then a temporal conv (R(2+1)D, Tran et al. 2018).

    Stage 0 patchifies (``patch`` x ``patch``, stride ``patch``) and halves time (temporal 3,
    stride 2); every later stage is spatial 3x3 stride 2 + temporal 3. BatchNorm, not
    GroupNorm: per-sample normalisation removes the global intensity differences (how much of
    the frame is dark cavity) that separate patients.
    """
    layers: list[nn.Module] = []
    cin = 3
    for i, w in enumerate(widths):
        if i == 0:
            spatial = nn.Conv3d(cin, w, (1, patch, patch), stride=(1, patch, patch), bias=False)
        else:
            spatial = nn.Conv3d(cin, w, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1),
                                bias=False)
        layers += [spatial, nn.BatchNorm3d(w), nn.GELU(),
                   nn.Conv3d(w, w, (3, 1, 1), stride=(2 if i == 0 else 1, 1, 1),
                             padding=(1, 0, 0), bias=False), nn.BatchNorm3d(w), nn.GELU()]
        cin = w
    return nn.Sequential(*layers)


class TemporalBlock(nn.Module):
    """Attention over time only, per spatial cell (space is mixed by the conv stem)."""

    def __init__(self, dim: int, heads: int, ratio: float, dropout: float) -> None:
        super().__init__()
        self.block = Block(dim, heads, ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, s, d = x.shape
        h = self.block(x.transpose(1, 2).reshape(b * s, t, d))
        return h.reshape(b, s, t, d).transpose(1, 2)


class ClipEncoder(Pretrained, nn.Module):
    """Default :class:`~echosonar.encode.protocol.VideoEncoder`: clip -> ``[B, 1 + N, D]``.

    ``encode(frames [B, T, C, H, W] in [0, 1], views)`` returns the global token first, then
    ``N = token_t * token_s**2`` space-time tokens in (time, row, column) order.
    """

    checkpoint_kind = "clip_encoder"
    config_class = EncoderModelConfig

    def __init__(self, config: EncoderModelConfig) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise ValueError(f"unknown encoder arch {config.arch!r}; choose one of {ARCHS}")
        self.config = c = config
        d = c.dim
        if c.arch == "conv21d":
            widths = list(c.stem_widths)
            self.stem = conv21d_stem(widths, c.stem_patch)
            self.stem_proj = nn.Linear(widths[-1], d)
            self.grid_t = math.ceil(c.clip_len / 2)
            self.grid_s = math.ceil(c.image_size / c.stem_patch / 2 ** (len(widths) - 1))
            self.blocks = nn.ModuleList(TemporalBlock(d, c.heads, c.mlp_ratio, c.dropout)
                                        for _ in range(c.depth))
        else:
            tt, th, tw = c.tubelet
            if c.clip_len % tt or c.image_size % th or th != tw:
                raise ValueError(f"tubelet {c.tubelet} must tile {c.clip_len} frames of "
                                 f"{c.image_size}x{c.image_size} (square tubelets)")
            self.stem = nn.Conv3d(3, d, (tt, th, tw), stride=(tt, th, tw))
            self.stem_proj = nn.Identity()
            self.grid_t, self.grid_s = c.clip_len // tt, c.image_size // th
            self.blocks = nn.ModuleList(FactorisedBlock(d, c.heads, c.mlp_ratio, c.dropout)
                                        for _ in range(c.depth))
        if self.grid_t < c.token_t or self.grid_s < c.token_s:
            raise ValueError(f"token grid {c.token_t}x{c.token_s}x{c.token_s} is finer than the "
                             f"stem grid {self.grid_t}x{self.grid_s}x{self.grid_s}")
        self.view_embed = nn.Embedding(len(CLASSIFIER_VIEWS), d)
        self.pos_t = nn.Parameter(torch.zeros(self.grid_t, 1, d))
        self.pos_s = nn.Parameter(torch.zeros(1, self.grid_s ** 2, d))
        self.drop = nn.Dropout(c.dropout)
        self.norm = nn.LayerNorm(d)
        self.query = nn.Parameter(torch.zeros(1, 1, d))
        self.pool_attn = nn.MultiheadAttention(d, c.heads, batch_first=True)
        self.pool_mlp = Mlp(d, c.mlp_ratio, 0.0)
        # position-aware summary: where boundaries sit is the signal (chamber size, wall
        # thickness, EF = ED vs ES); a mean/attention pool alone nearly erases it
        self.flat_in = nn.Linear(d, c.flat_dim)
        self.flat_out = nn.Linear(self.grid_t * self.grid_s ** 2 * c.flat_dim, d)
        self.out_norm = nn.LayerNorm(d)
        # per-view mean / std image of the training clips (set by fit_input_stats): what differs
        # between patients is a few pixels of boundary; standardising per view and pixel makes
        # those differences O(1) instead of drowning them in the shared anatomy (AlexNet-style
        # mean-image subtraction, per view). Defaults map [0, 1] to about [-2, 2].
        n_v, s_ = len(CLASSIFIER_VIEWS), c.image_size
        self.register_buffer("input_mean", torch.full((n_v, 3, s_, s_), 0.5))
        self.register_buffer("input_std", torch.full((n_v, 3, s_, s_), 0.25))
        for p in (self.pos_t, self.pos_s, self.query, self.view_embed.weight):
            nn.init.trunc_normal_(p, std=0.02)  # small: content, not offsets, must dominate

    # -- VideoEncoder protocol -----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def n_tokens(self) -> int:
        return self.config.token_t * self.config.token_s ** 2

    def describe(self) -> dict:
        return {"kind": self.checkpoint_kind, "arch": self.config.arch, "dim": self.dim,
                "n_tokens": self.n_tokens, "clip_len": self.config.clip_len,
                "image_size": self.config.image_size,
                "params": sum(p.numel() for p in self.parameters())}

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, views: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Inference entry point (eval mode is the caller's job): ``[B, 1 + N, D]``."""
        return self(frames, views)

    # -- network ----------------------------------------------------------------------------
    def grid(self, frames: torch.Tensor, views: Sequence[str] | torch.Tensor,
             cell_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``[B, T, C, H, W]`` -> contextualised grid tokens ``[B, T', S, D]``.

        ``cell_mask`` (optional bool ``[B, T', S]``, True = hidden) zeroes the stem tokens of
        hidden cells, for masked-video pretraining (exact for ``tubelet``; for ``conv21d`` the
        3x3 stage sees a little of neighbouring cells, so hiding is approximate there).
        """
        c = self.config
        vi = view_indices(views, frames.device)
        x = prepare_frames(frames, c.clip_len, c.image_size) / 2.0 + 0.5       # [B, 3, T, S, S]
        x = (x - self.input_mean[vi][:, :, None]) / self.input_std[vi][:, :, None]
        x = self.stem(x)                                           # [B, C', T', S', S']
        b, ch = x.shape[:2]
        x = self.stem_proj(x.reshape(b, ch, self.grid_t, -1).permute(0, 2, 3, 1))  # [B,T',S,D]
        if cell_mask is not None:
            x = x.masked_fill(cell_mask.unsqueeze(-1), 0.0)
        v = self.view_embed(vi)[:, None, None, :]
        x = self.drop(x + self.pos_t + self.pos_s + v)
        for blk in self.blocks:
            x = blk(x)
        return x

    def readout(self, grid: torch.Tensor, views: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Grid ``[B, T', S, D]`` -> ``[B, 1 + N, D]`` (global token, then pooled cells)."""
        c = self.config
        b, t, s, d = grid.shape
        g = self.norm(grid)
        flat = g.reshape(b, t * s, d)
        q = self.query.expand(b, 1, d) + self.view_embed(view_indices(views, grid.device))[:, None]
        glob = q + self.pool_attn(q, flat, flat, need_weights=False)[0]
        glob = glob + self.flat_out(self.flat_in(g).flatten(1))[:, None]
        glob = glob + self.pool_mlp(glob)
        cube = g.permute(0, 3, 1, 2).reshape(b, d, t, self.grid_s, self.grid_s)
        cells = F.adaptive_avg_pool3d(cube, (c.token_t, c.token_s, c.token_s))
        cells = cells.flatten(2).transpose(1, 2)                    # [B, N, D]
        return self.out_norm(torch.cat([glob, cells], dim=1))

    def forward(self, frames: torch.Tensor, views: Sequence[str] | torch.Tensor) -> torch.Tensor:
        return self.readout(self.grid(frames, views), views)

    @torch.no_grad()
    def fit_input_stats(self, frames: Iterable[torch.Tensor], views: Iterable[int],
                        min_std: float = 0.05) -> None:
        """Set the per-view mean/std images from clips (``[T, C, H, W]`` in [0, 1]) and their
        view ids; views never seen keep the defaults. Part of the checkpoint (buffers)."""
        c = self.config
        n_v = len(CLASSIFIER_VIEWS)
        s1 = torch.zeros(n_v, 3, c.image_size, c.image_size, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        n = torch.zeros(n_v, dtype=torch.float64)
        for f, v in zip(frames, views, strict=True):
            x = prepare_frames(f[None], c.clip_len, c.image_size)[0] / 2.0 + 0.5  # [3, T, S, S]
            s1[v] += x.sum(1).double()
            s2[v] += (x.double() ** 2).sum(1)
            n[v] += x.shape[1]
        seen = n > 0
        mean = s1[seen] / n[seen, None, None, None]
        std = (s2[seen] / n[seen, None, None, None] - mean ** 2).clamp(min=0).sqrt()
        self.input_mean[seen] = mean.float()
        self.input_std[seen] = std.float().clamp(min=min_std)


def build_encoder(config: EncoderModelConfig | None = None) -> ClipEncoder:
    """Factory for the default encoder (``EncoderModelConfig()`` defaults when None)."""
    return ClipEncoder(config or EncoderModelConfig())
