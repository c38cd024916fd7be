"""Detector config (owned by the detect stage).

Architecture fields are stored in the checkpoint's ``config.json`` (``Detector.config``), so a
saved detector rebuilds itself; training fields only shape how ``echosonar train detector`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class DetectConfig:
    # ---- architecture ----------------------------------------------------------------------
    embed_dim: int = opt(64, "width of the decoder and of the per-structure embedding "
                             "(structure tokens are [K, embed_dim])")
    image_size: int = opt(64, "frames are resized to this square size before the backbone")
    widths: list[int] = opt([16, 32, 64, 128], "channels of the four stride-2 conv stages "
                            "(the first plain, the others residual)")
    memory_strides: list[int] = opt([4, 8, 16], "feature maps (by stride) whose cells form the "
                                    "decoder memory; stride 4 localises small valves")
    auto_gain: bool = opt(True, "normalise each frame's brightness (99th percentile of the grey "
                          "level -> 0.6) before the CNN, for scanners with other gain")
    refine: bool = opt(True, "RoI refinement: sample the stride-2/4 feature maps inside each box "
                       "and correct it (small valves), folding the samples into the token")
    roi_points: int = opt(5, "refinement samples per box side (roi_points^2 per box)")
    decoder_layers: int = opt(2, "transformer decoder layers (each one is deep-supervised)")
    heads: int = opt(4, "attention heads in the decoder")
    assign: str = opt("class", "'class': one query bound to each structure class (each class "
                      "appears at most once per frame); 'hungarian': free queries, softmax over "
                      "classes + no-object, Hungarian matching (DETR)")
    num_queries: int = opt(16, "queries in 'hungarian' mode (ignored in 'class' mode, where "
                           "there is one per class)")
    view_cond: bool = opt(True, "add a learned view embedding (the clip's view, OTHER when "
                          "unknown) to the queries")
    # ---- inference ---------------------------------------------------------------------------
    score_threshold: float = opt(0.5, "a structure is present in a clip when its score, "
                                 "averaged over its best quarter of frames, reaches this")
    smooth_frames: int = opt(3, "odd temporal window (frames) of the score-weighted box "
                             "smoothing that turns per-frame boxes into tracks (1 = none)")
    # ---- training ----------------------------------------------------------------------------
    epochs: int = opt(12, "training epochs")
    lr: float = opt(2e-3, "AdamW peak learning rate (linear warm-up, cosine decay)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    warmup_steps: int = opt(100, "linear learning-rate warm-up steps")
    batch_size: int = opt(64, "frames per optimisation step")
    frames_per_clip: int = opt(4, "frames sampled from each clip per epoch (neighbouring frames "
                               "are nearly identical, so a few per clip per epoch suffice)")
    repeat_threshold: float = opt(0.3, "repeat-factor sampling (LVIS): a clip whose rarest class "
                                  "is in a fraction f < t of the clips gets sqrt(t / f) times "
                                  "more frames per epoch (0 = off)")
    loss_presence: float = opt(1.0, "weight of the presence / classification loss")
    loss_l1: float = opt(5.0, "weight of the L1 box loss (cxcywh, 0..1)")
    loss_giou: float = opt(2.0, "weight of the generalised-IoU box loss")
    no_object_weight: float = opt(0.1, "'hungarian' mode: weight of the no-object class in the "
                                  "cross-entropy (DETR's eos_coef)")
    augment: float = opt(1.0, "augmentation strength (0 = none): scale/shift, gain, gamma, "
                         "blur, noise")
    us_augment: float = opt(0.0, "probability scale of the ultrasound-specific domain "
                            "randomisation shared with the view classifier "
                            "(echosonar.us_augment; 0 = none): depth zoom about the apex and "
                            "sector width (boxes follow), reject level and greyscale map, depth "
                            "attenuation and TGC, near-field haze, lateral dropout, speckle, "
                            "cavity noise, blur, burned-in marks")
    us_depth_zoom: bool = opt(True, "with us_augment: also zoom out/in about the apex (on top "
                              "of `augment`'s own zoom 0.6-1.25x, so a heart can shrink to "
                              "0.3x); false keeps only its sector-width stretch")
    view_dropout: float = opt(0.2, "probability of hiding the view (OTHER) during training, so "
                              "the detector still works when the view is unknown")
    init_from: str = opt("", "start from this detector checkpoint folder (same architecture) "
                         "instead of random weights: fine-tuning, e.g. with us_augment, keeps the "
                         "structure-token space a language model was trained on close")
    max_clips: int = opt(0, "train on at most this many clips (0 = all)")
    eval_every: int = opt(3, "evaluate on the val split every this many epochs (0 = only at "
                          "the end)")
    threads: int = opt(1, "torch CPU threads (1 is fastest on a busy shared machine: with 2, "
                       "each step waits for the slower thread; measured 5-15x slower under load)")
    seed: int = opt(0, "random seed")
