"""Ingest config (owned by the ingest stage): readers, preprocessing, cache, view classifier."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt, section
from echosonar.taxonomy import CLASSIFIER_VIEWS


@dataclass
class ViewModelConfig:
    """Architecture of the view classifier (stored in its checkpoint's config.json)."""

    image_size: int = opt(64, "input width and height (clips of another size are resized)")
    n_frames: int = opt(4, "frames sampled evenly across the clip and fed to the CNN")
    widths: list[int] = opt([16, 32, 48, 64], "channels of the 4x4 patchify stem and of the three "
                            "conv blocks (at 1/4, 1/8, 1/16 of image_size)")
    dropout: float = opt(0.1, "dropout before the classification head")
    normalize: bool = opt(True, "divide each clip by its 99th-percentile brightness (gain-proof)")
    channel_prior: bool = opt(True, "3-channel (colour) clips can only be colour views or OTHER, "
                              "1-channel clips only B-mode views or OTHER")
    classes: list[str] = opt(list(CLASSIFIER_VIEWS), "class names, in logit order")


@dataclass
class ViewTrainConfig:
    """How ``echosonar train view-classifier`` trains the view classifier."""

    epochs: int = opt(12, "passes over the training clips")
    batch_size: int = opt(32, "clips per optimisation step")
    lr: float = opt(2e-3, "AdamW peak learning rate (cosine decay, short warm-up)")
    weight_decay: float = opt(1e-4, "AdamW weight decay")
    other_fraction: float = opt(0.15, "fraction of each batch replaced by synthetic OTHER clips")
    augment: float = opt(1.0, "augmentation strength (0 = none); geometry, gain, gamma, noise")
    us_augment: float = opt(1.0, "probability scale of the ultrasound-specific domain "
                            "randomisation (0 = none): zoom-out/crop about the apex, sector "
                            "width, reject level and greyscale map, depth attenuation and TGC, "
                            "near-field haze, lateral dropout, tissue-brightness field, speckle, "
                            "cavity noise, blur, burned-in marks")
    seed: int = opt(0, "random seed")
    threads: int = opt(1, "torch CPU threads (1 is fastest on a busy 2-core machine)")
    max_clips: int = opt(0, "use at most this many training clips (0 = all)")


@dataclass
class IngestConfig:
    image_size: int = opt(64, "model input width and height after sector crop and resize")
    clip_len: int = opt(16, "frames per clip after temporal resampling")
    salt: str = opt("echosonar-default-salt", "salt for the study-key hash; set your own per site")
    workers: int = opt(1, "parallel worker processes")
    max_file_mb: float = opt(2048.0, "files larger than this are skipped as absurd")
    # -- sanity limits (checked from the header, before any pixel is decoded) -------------
    max_side: int = opt(4096, "rows or columns above this are rejected as absurd")
    min_side: int = opt(16, "rows or columns below this are rejected as absurd")
    max_frames: int = opt(3000, "clips with more frames than this are rejected as absurd")
    max_decoded_mb: float = opt(3072.0, "decoded size (frames*rows*cols*samples) limit, MiB")
    min_frames: int = opt(2, "clips with fewer frames are rejected; 1 accepts stills (repeated)")
    allowed_modalities: list[str] = opt(["US"], "DICOM Modality values accepted")
    jpeg_plugin: str = opt("pillow", "pydicom plugin tried first for 8-bit JPEG ('' = pydicom's "
                           "order); falls back to the others on failure")
    # -- timing ----------------------------------------------------------------------------
    default_fps: float = opt(30.0, "frame rate assumed when a file has no timing (warned)")
    temporal_window: str = opt("clip", "'clip': resample the whole clip; 'cycle': the first "
                               "heart cycle when the header gives a heart rate")
    temporal_interp: str = opt("nearest", "'nearest' (real frames) or 'linear' (blend)")
    # -- geometry and colour ---------------------------------------------------------------
    sector_from_image: bool = opt(True, "estimate the fan inside the region from the pixels "
                                  "(masks burned-in text and markers inside the region box)")
    color_chroma: float = opt(40.0, "a pixel is coloured when max(RGB)-min(RGB) exceeds this")
    color_min_fraction: float = opt(0.003, "a clip is colour Doppler when this fraction of its "
                                    "in-sector pixels is coloured")
    # -- outputs ---------------------------------------------------------------------------
    cache_dtype: str = opt("uint8", "frame dtype in the cache: uint8 (4x smaller) or float16")
    keep_source_names: bool = opt(False, "name clips and skipped files by their file name in "
                                  "ingest's outputs (stdout, summary, cache); default: position "
                                  "+ salted hash, as file names often carry patient names")
    prefer_video: bool = opt(False, "ingest a manifest clip's video_path instead of its DICOM")
    view_model: str = opt("", "view-classifier checkpoint folder used when a view is unknown")
    view_min_conf: float = opt(0.0, "predictions below this confidence become OTHER")
    view: ViewModelConfig = section(ViewModelConfig, "view-classifier architecture")
    view_train: ViewTrainConfig = section(ViewTrainConfig, "view-classifier training")
