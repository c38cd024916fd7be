"""Spatiotemporal video encoder, its feature cache, and the classifier baselines.

Public API::

    from echosonar.encode import VideoEncoder, ClipEncoder, ModuleEncoder, load_encoder
    enc = load_encoder("runs/encoder")                 # frozen, eval mode
    tokens = enc.encode(frames, ["A4C", "PLAX"])       # [B, T, C, H, W] -> [B, 1 + N, D]

See docs/notes/encode.md for formats and commands.
"""

from echosonar.encode.models import ClipEncoder, build_encoder, prepare_frames
from echosonar.encode.protocol import ModuleEncoder, VideoEncoder, load_encoder, register_encoder

__all__ = ["ClipEncoder", "ModuleEncoder", "VideoEncoder", "build_encoder", "load_encoder",
           "prepare_frames", "register_encoder"]
