"""Video encoder, feature cache and classifier-baseline config (owned by the encode stage).

``EncodeConfig.model`` is the encoder architecture and is stored in the encoder checkpoint's
``config.json``; ``pretrain`` drives ``echosonar train encoder``; ``baselines`` drives
``echosonar train baselines``; the remaining top-level fields drive ``echosonar encode``.
"""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt, section


@dataclass
class EncoderModelConfig:
    """Architecture of the default clip encoder (``echosonar.encode.models.ClipEncoder``)."""

    arch: str = opt("tubelet", "'tubelet': tubelet embedding + factorised space/time attention; "
                    "'conv21d': (2+1)D conv stem + temporal transformer")
    dim: int = opt(64, "token width D of the clip encoder's output")
    depth: int = opt(2, "transformer blocks after the stem")
    heads: int = opt(4, "attention heads")
    mlp_ratio: float = opt(2.0, "transformer MLP width / dim")
    dropout: float = opt(0.0, "dropout in attention/MLP and on the stem output")
    image_size: int = opt(64, "input width and height (other clip sizes are resized)")
    clip_len: int = opt(16, "input frames (other clip lengths are resampled, nearest frame)")
    stem_widths: list[int] = opt([32, 64], "conv21d: channels of the (2+1)D stages (stage 0 "
                                 "patchifies; each later stage halves the side)")
    stem_patch: int = opt(4, "conv21d: spatial patch size of the first (2+1)D stage")
    tubelet: list[int] = opt([2, 8, 8], "tubelet: (t, h, w) size of one tubelet")
    flat_dim: int = opt(16, "width each grid token is projected to for the position-aware "
                        "global summary (global += Linear(flatten(grid)))")
    token_t: int = opt(2, "output space-time tokens: time cells (N = token_t * token_s**2)")
    token_s: int = opt(2, "output space-time tokens: spatial cells per side")


@dataclass
class EncoderTrainConfig:
    """How ``echosonar train encoder`` pretrains the encoder (no language model involved)."""

    epochs: int = opt(5, "passes over the training clips")
    batch_size: int = opt(8, "clips per optimisation step (small: more updates per CPU-second)")
    lr: float = opt(2e-3, "AdamW peak learning rate (linear warm-up, cosine decay)")
    weight_decay: float = opt(0.05, "AdamW weight decay")
    warmup_frac: float = opt(0.05, "fraction of steps used for linear warm-up")
    label_weight: float = opt(1.0, "weight of the view-masked label BCE loss")
    measure_weight: float = opt(1.0, "weight of the view-masked measurement regression loss")
    mask_video_weight: float = opt(0.0, "weight of masked-video reconstruction (0 = off)")
    mask_ratio: float = opt(0.5, "fraction of space-time cells hidden for masked-video loss")
    augment: bool = opt(True, "random gain/gamma/shift/temporal-offset augmentation")
    augment_shift: int = opt(1, "largest random shift, pixels (inputs are standardised against "
                             "a per-view mean image, so keep it small)")
    max_clips: int = opt(0, "use at most this many training clips (0 = all)")
    grad_clip: float = opt(1.0, "max gradient norm")
    seed: int = opt(0, "random seed")
    threads: int = opt(1, "torch CPU threads (1 is fastest on a busy 2-core host)")


@dataclass
class BaselineConfig:
    """How ``echosonar train baselines`` trains the classifier baselines on frozen features."""

    methods: list[str] = opt(["prior", "single_view", "late_fusion", "attention_fusion",
                              "attention_fusion_evidence"],
                             "baselines to train and evaluate, in table order")
    single_view: str = opt("A4C", "the view the single-view baseline reads")
    hidden: int = opt(128, "hidden width of the baseline heads")
    heads: int = opt(4, "attention heads of the view-aware fusion model")
    fusion_layers: int = opt(0, "fusion: transformer layers across a study's clips (0 = none; "
                             "chosen on val BCE: 1 layer overfits 400 studies)")
    epochs: int = opt(60, "training epochs per baseline")
    batch_size: int = opt(32, "studies per optimisation step")
    lr: float = opt(1e-3, "AdamW learning rate")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    dropout: float = opt(0.2, "dropout in the baseline heads")
    token_dropout: float = opt(0.1, "fusion: probability of hiding a whole view while training")
    evidence_structures: bool = opt(True, "attention_fusion_evidence: read the detector's "
                                    "structure tokens and scores of every clip (false: ablate)")
    evidence_measurements: bool = opt(True, "attention_fusion_evidence: read the detector's "
                                      "measurements as standardised numbers, the slots the VLM's "
                                      "measurement head reads (false: ablate)")
    measure_lr: float = opt(3e-2, "attention_fusion_evidence: AdamW learning rate of its linear "
                            "measurement term (a cut-off needs large weights on z-scores; at "
                            "'lr' it underfits before the clip path overfits)")
    seed: int = opt(0, "random seed")
    threads: int = opt(1, "torch CPU threads (1 is fastest on a busy 2-core host)")


@dataclass
class EncodeConfig:
    model: EncoderModelConfig = section(EncoderModelConfig, "clip-encoder architecture")
    pretrain: EncoderTrainConfig = section(EncoderTrainConfig, "encoder pretraining")
    baselines: BaselineConfig = section(BaselineConfig, "classifier baselines")
    batch_size: int = opt(16, "clips per encoder forward pass in 'echosonar encode'")
    threads: int = opt(1, "torch CPU threads for 'echosonar encode'")
    index_every: int = opt(10, "rewrite the feature index every N studies (resume granularity)")
