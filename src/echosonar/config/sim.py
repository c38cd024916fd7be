"""Simulator config (owned by the simulate stage).

Three groups of fields: the study set (how many, which views, splits), the patient population
(prevalences of the latent disease processes that drive the measurements), and the "scanner"
(probe frequency, depth, gain, noise, frame rate, image size). The scanner group is what the
``shifted`` preset changes; see :mod:`echosonar.simulate.presets`.
"""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class SimConfig:
    # ---- study set ---------------------------------------------------------------------------
    studies: int = opt(20, "number of studies to write")
    preset: str = opt("default", "scanner preset: 'default' or 'shifted'")
    seed: int = opt(0, "random seed; the same seed gives the same studies")
    frames: int = opt(16, "frames per clip (one heart cycle, end-diastole first)")
    image_size: int = opt(112, "rendered image width and height, pixels")
    views: list[str] = opt(["A4C", "A2C", "PLAX", "PSAX_AV", "A4C_COLOR", "PLAX_COLOR"],
                           "views a study may contain (subset of taxonomy.VIEWS)")
    required_views: list[str] = opt(["A4C"], "views every study has")
    missing_view_prob: float = opt(0.1, "probability that a non-required view is missing")
    write_mp4: bool = opt(False, "also write an MP4 copy of each clip (PyAV)")
    split_fractions: list[float] = opt([0.7, 0.1, 0.2], "train/val/test fractions of studies")
    workers: int = opt(1, "worker processes for rendering")
    # ---- population: prevalences of latent disease processes (each 0..1) -------------------
    prev_cardiomyopathy: float = opt(0.16, "low EF, usually with LV dilation, LA enlargement, "
                                           "functional MR")
    prev_hypertensive: float = opt(0.13, "LV hypertrophy, often with LA enlargement")
    prev_aortic_stenosis: float = opt(0.08, "calcific AS; often MV calcification and LVH")
    prev_bicuspid: float = opt(0.03, "bicuspid aortic valve (rare); may cause AS or AR")
    prev_mitral_regurgitation: float = opt(0.08, "primary MR; usually with LA enlargement")
    prev_right_heart: float = opt(0.05, "pulmonary hypertension: RV/RA enlargement and TR")
    prev_tricuspid_regurgitation: float = opt(0.05, "primary TR; often with RA enlargement")
    prev_aortic_regurgitation: float = opt(0.05, "AR; sometimes with LV dilation")
    prev_effusion: float = opt(0.03, "pericardial effusion (rarer)")
    prev_mv_calcification: float = opt(0.05, "age-related mitral annular calcification")
    borderline_prob: float = opt(0.4, "probability a study has 1-2 measurements placed within "
                                      "±8% of their cut-off")
    # ---- scanner / image formation (the 'shifted' preset changes these) ---------------------
    probe_mhz: float = opt(3.0, "probe centre frequency, MHz (sets the point-spread function)")
    depth_scale: float = opt(1.0, "multiplier of the standard imaging depth per view")
    half_angle_deg: float = opt(35.0, "sector half-angle, degrees")
    gain_db: float = opt(0.0, "overall receive gain, dB")
    dynamic_range_db: float = opt(50.0, "displayed dynamic range of the log compression, dB")
    noise_db: float = opt(-38.0, "electronic noise floor relative to myocardium, dB")
    dropout: float = opt(0.5, "probability of an acoustic dropout/shadow per clip")
    speckle_corr: float = opt(0.75, "frame-to-frame speckle correlation (0 = fresh speckle)")
    quality_spread: float = opt(1.0, "spread of per-study image quality (0 = all ideal)")
    jitter: float = opt(1.0, "scale of per-clip probe position/angle variation")
    realism: float = opt(0.0, "0 = the classic EchoSim look (bit-identical); up to 1: darker "
                         "lung/mediastinum around the heart, soft tissue borders (echogenicity "
                         "blurred over ~2-3 mm), weak blood speckle in the cavities")
