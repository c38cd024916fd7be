"""``echosonar`` command line: one subcommand per pipeline stage.

Only the chosen subcommand's module is imported, so ``echosonar --help`` is instant. Each
command module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from echosonar import __version__

#: (command words, module, one-line purpose) in pipeline order.
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("simulate",), "echosonar.simulate.cli",
     "write simulated multi-view echo studies (DICOM/MP4 + manifest with ground truth)"),
    (("ingest",), "echosonar.ingest.cli",
     "read DICOM/MP4 studies into de-identified, view-labelled clip tensors (cache)"),
    (("dataset", "build"), "echosonar.dataset.cli",
     "your study folders + a labels file -> a training dataset (clip cache with labels)"),
    (("dataset", "targets"), "echosonar.reason.evidence_targets",
     "write reasoning targets into a feature cache from its own detector evidence and labels"),
    (("detect",), "echosonar.detect.cli",
     "find cardiac structures in a clip or study; boxes, tracks, measurements"),
    (("encode",), "echosonar.encode.cli",
     "encode cached clips into space-time tokens (feature cache)"),
    (("train", "all"), "echosonar.app.train_all_cli",
     "every training stage on a dataset (or simulated set) -> bundle + test evaluation"),
    (("train", "view-classifier"), "echosonar.ingest.train_view_cli",
     "train the view classifier on simulated clips"),
    (("train", "detector"), "echosonar.detect.train_cli", "train the structure detector"),
    (("train", "encoder"), "echosonar.encode.train_cli",
     "pretrain the video encoder with multi-task labels"),
    (("train", "baselines"), "echosonar.encode.baselines_cli",
     "train and evaluate the classifier baselines (prior, single-view, late/attention fusion, "
     "attention fusion + detector evidence)"),
    (("train", "sft"), "echosonar.reason.sft_cli",
     "supervised fine-tuning of the reasoning VLM"),
    (("train", "head"), "echosonar.reason.head_fit",
     "refit an EchoSonar-R's label heads (hidden-state + measurement) on its frozen LM"),
    (("train", "grpo"), "echosonar.reason.grpo_cli",
     "GRPO reinforcement learning from an SFT checkpoint"),
    (("evaluate",), "echosonar.evaluate.cli",
     "score a model on a split: BAcc, F1, AUROC, GREEN-rule, BLEU/ROUGE/METEOR"),
    (("results",), "echosonar.evaluate.results",
     "write docs/RESULTS.md from a folder of evaluation outputs (headline, controls, rows)"),
    (("benchmark",), "echosonar.evaluate.benchmark_cli",
     "train and evaluate every results-table row; regenerate docs/RESULTS.md"),
    (("analyze",), "echosonar.app.analyze_cli",
     "analyze a study end to end: result.json and a report.html page"),
    (("bundle",), "echosonar.app.bundle_cli",
     "assemble a model bundle (for analyze/serve) from trained checkpoints; --ship, --verify"),
    (("serve",), "echosonar.app.serve_cli", "serve the upload form, report page and JSON API"),
    (("quickstart",), "echosonar.app.quickstart_cli",
     "analyse example studies with the shipped model (--train: train every stage first)"),
    (("config",), "echosonar.config.cli", "print the default config or describe its fields"),
]


class NotBuiltError(SystemExit):
    """Raised by commands whose stage is not implemented yet."""


def _top_help() -> str:
    lines = [f"echosonar {__version__} — multi-view reasoning over echocardiograms",
             "", "usage: echosonar COMMAND [options]   (echosonar COMMAND --help for details)",
             "", "commands:"]
    for words, _, purpose in COMMANDS:
        lines.append(f"  {' '.join(words):<24} {purpose}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    match = None
    for words, module, purpose in COMMANDS:
        if tuple(argv[: len(words)]) == words and (match is None or len(words) > len(match[0])):
            match = (words, module, purpose)
    if match is None:
        group = [w for w, _, _ in COMMANDS if w[0] == argv[0]]
        if group:
            subs = ", ".join(w[1] for w in group if len(w) > 1)
            print(f"echosonar {argv[0]}: choose one of: {subs}", file=sys.stderr)
        else:
            print(f"echosonar: unknown command {argv[0]!r}\n\n{_top_help()}", file=sys.stderr)
        return 2
    words, module_name, purpose = match
    parser = argparse.ArgumentParser(prog="echosonar " + " ".join(words), description=purpose)
    module = importlib.import_module(module_name)
    module.add_arguments(parser)
    args = parser.parse_args(argv[len(words):])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
