"""Render ``docs/RESULTS.md`` from a folder of evaluation outputs -- the one way it is written.

Input: ``EVAL/<row>[_s<seed>]/metrics_test[_<preset>].json`` as ``echosonar evaluate`` writes
them (``echosonar benchmark`` lays its evaluations out this way; a hand-made experiment can too).
Each metrics file says what it scored (``source``: name, protocol, preset, decoding, the
evaluate command), so the table is built from the files alone:

* **headline** rows: end-to-end protocol, nothing forced (no guided decoding), at least
  ``min_seeds`` seeds -- macro BAcc as mean ± sd over seeds plus the bootstrap CI of the first
  seed. Everything else is listed below as **exploratory** (one seed, oracle protocol, guided
  decoding, a variant).
* reference rows: the detector cut-off rule and the negative controls, computed on the same
  studies by every evaluation (taken from the first headline file).

    echosonar results EVAL [--out docs/RESULTS.md] [--title ...] [--min-seeds 3]
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SEED = re.compile(r"^(?P<row>.+?)_s(?P<seed>\d+)$")


@dataclass
class Row:
    """All seeds of one (row, protocol, preset, decoding) group."""

    name: str
    protocol: str
    preset: str
    decoding: str | None
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> metrics
    folders: dict[int, str] = field(default_factory=dict)

    @property
    def forced(self) -> bool:
        return self.decoding == "guided"

    def headline(self, min_seeds: int) -> bool:
        return (self.protocol == "end-to-end" and not self.forced
                and len(self.metrics) >= min_seeds)

    @property
    def first(self) -> dict[str, Any]:
        return self.metrics[min(self.metrics)]


def load_rows(eval_dir: str | Path) -> list[Row]:
    """Every metrics file under ``eval_dir`` grouped into :class:`Row` objects (sorted)."""
    rows: dict[tuple[str, str, str, str | None], Row] = {}
    for p in sorted(Path(eval_dir).glob("*/metrics_*.json")):
        m = json.loads(p.read_text())
        if "classification" not in m:
            continue
        src = m.get("source", {})
        hit = _SEED.match(p.parent.name)
        seed = int(hit["seed"]) if hit else 0
        name = str(src.get("name") or (hit["row"] if hit else p.parent.name))
        name = _SEED.sub(r"\g<row>", name)
        key = (name, str(src.get("protocol") or "oracle"), str(src.get("preset") or "default"),
               src.get("decoding"))
        row = rows.setdefault(key, Row(*key))
        row.metrics[seed] = m
        row.folders[seed] = p.parent.name
    from echosonar.evaluate.benchmark import ROWS

    order = {row: i for i, (row, *_) in enumerate(ROWS)}  # the results table's row order
    return sorted(rows.values(), key=lambda r: (r.preset != "default", r.protocol != "end-to-end",
                                                r.forced, order.get(r.name, len(order)), r.name))


def _pct(v: Any, d: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{d}f}"


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def _mean_sd(vals: Sequence[float | None], pct: bool = True) -> str:
    xs = [v for v in vals if v is not None]
    if not xs:
        return "–"
    f = (lambda v: 100 * v) if pct else (lambda v: v)
    fmt = "{:.1f}" if pct else "{:.3f}"
    if len(xs) == 1:
        return fmt.format(f(xs[0]))
    return f"{fmt.format(f(statistics.mean(xs)))} ± {fmt.format(f(statistics.stdev(xs)))}"


def _get(m: Mapping[str, Any], *path: str) -> Any:
    for k in path:
        if not isinstance(m, Mapping):
            return None
        m = m.get(k)  # type: ignore[assignment]
    return m


def _cells(row: Row, rare: list[str]) -> list[str]:
    ms = [row.metrics[s] for s in sorted(row.metrics)]
    first = row.first
    lo, hi = _get(first, "classification", "macro_balanced_accuracy_ci") or (None, None)
    rare_mean = [statistics.mean(v) if (v := [x for k in rare if (x := _get(
        m, "classification", "per_label", k, "balanced_accuracy")) is not None]) else None
        for m in ms]
    well = [_get(m, "well_formed_rate") for m in ms]
    agree = [_get(m, "reasoning", "agreement_rate") for m in ms]
    cites = [_get(m, "citations", "citation_exact_rate") for m in ms]
    return [
        _mean_sd([_get(m, "classification", "macro_balanced_accuracy") for m in ms]),
        f"[{_pct(lo)}, {_pct(hi)}]",
        _mean_sd([_get(m, "classification", "macro_f1") for m in ms]),
        _mean_sd([_get(m, "classification", "macro_auroc") for m in ms]),
        _mean_sd(rare_mean),
        _mean_sd([_get(m, "green_rule", "green_rule") for m in ms], pct=False),
        _mean_sd([_get(m, "green_rule", "abnormal_f1") for m in ms], pct=False),
        _mean_sd([_get(m, "text", "bleu4") for m in ms], pct=False),
        _mean_sd([_get(m, "text", "rougeL") for m in ms], pct=False),
        "forced" if row.forced else _mean_sd(well),
        "forced" if row.forced else _mean_sd(agree),
        "forced" if row.forced else _mean_sd([_get(m, "reasoning_lines", "macro_bacc")
                                               for m in ms]),
        "forced" if row.forced else _mean_sd(cites),
        _mean_sd([_get(m, "label_head_val_thresholds", "macro_bacc") for m in ms]),
    ]


HEAD = ["row", "seeds", "macro BAcc %", "95% CI (first seed)", "macro F1 %", "macro AUROC %",
        "rare-4 BAcc %", "GREEN-rule", "abnormal-finding F1", "BLEU-4", "ROUGE-L",
        "well-formed %", "reasoning–answer agreement %",
        "reasoning lines' findings BAcc % (diagnostic)", "citations exact %",
        "label head @ val thr %"]


def _table(rows: Sequence[Row], rare: list[str]) -> list[str]:
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    from echosonar.evaluate.benchmark import ROWS

    names = {row: label for row, label, _, _ in ROWS}
    for r in rows:
        label = names.get(r.name, r.name) + (" (GUIDED decoding: findings forced)" if r.forced
                                              else "") + (
            " (ORACLE protocol)" if r.protocol == "oracle" else "")
        out.append("| " + " | ".join([label, str(len(r.metrics)), *_cells(r, rare)]) + " |")
    return out


def _reference(m: Mapping[str, Any]) -> list[str]:
    """Cut-off rule and negative-control rows of one metrics file (same studies)."""
    out = ["| reference row | macro BAcc % | GREEN-rule | abnormal-finding F1 | BLEU-4 | "
           "ROUGE-L | METEOR | MiniLM cosine |", "|---|---|---|---|---|---|---|---|"]
    cut = m.get("cutoff_rule") or {}
    lo, hi = cut.get("macro_bacc_ci") or (None, None)
    out.append(f"| detector cut-off rule (no learning) | {_pct(cut.get('macro_bacc'))} "
               f"[{_pct(lo)}, {_pct(hi)}] | – | – | – | – | – | – |")
    for name, c in (m.get("controls") or {}).items():
        out.append(f"| control: {name} | {_pct(c.get('macro_bacc'))} | {_num(c.get('green_rule'))}"
                   f" | {_num(c.get('abnormal_f1'))} | {_num(c.get('bleu4'))} | "
                   f"{_num(c.get('rougeL'))} | {_num(c.get('meteor'))} | "
                   f"{_num(c.get('embed_cosine'))} |")
    return out


def render(eval_dir: str | Path, title: str = "EchoSonar results", intro: str = "",
           min_seeds: int = 3) -> str:
    """The Markdown of ``docs/RESULTS.md`` for the evaluations under ``eval_dir``."""
    rows = load_rows(eval_dir)
    if not rows:
        raise FileNotFoundError(f"no metrics_*.json under {eval_dir}/*/")
    main = [r for r in rows if r.headline(min_seeds)]
    rest = [r for r in rows if not r.headline(min_seeds)]
    ref = (main or rows)[0].first
    rare = list(ref.get("rare_labels", {}))
    commits = sorted({str(_get(m, "run_info", "git_commit") or "?")[:12]
                      for r in rows for m in r.metrics.values()})
    times = sorted(str(_get(m, "run_info", "time_utc") or "") for r in rows
                   for m in r.metrics.values() if _get(m, "run_info", "time_utc"))
    when = f"{times[0][:16]} – {times[-1][:16]} UTC; " if times else ""
    n = ref.get("n_studies")
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro, ""]
    lines += [f"Generated by `echosonar results` from {sum(len(r.metrics) for r in rows)} "
              f"evaluation outputs ({when}commits {', '.join(f'`{c}`' for c in commits)}). "
              "Every number "
              "was measured on simulated data (EchoSim); nothing is copied from the paper.", "",
              f"## Headline: end-to-end protocol, free decoding, ≥ {min_seeds} seeds "
              f"({n} test studies)", ""]
    lines += _table(main, rare) if main else [
        f"No row has {min_seeds} seeds under the end-to-end protocol yet: nothing here is a "
        "headline number."]
    lines += ["", f"## Reference rows on the same {n} studies", "", *_reference(ref), "",
              "A metric on which a control comes within 0.05 of a model is not a headline metric "
              "for that model (each evaluation's `headline_check`).", ""]
    if rest:
        lines += ["## Exploratory rows (one seed, forced decoding, oracle protocol or another "
                  "preset: not headline numbers)", ""]
        for preset in sorted({r.preset for r in rest}, key=lambda p: p != "default"):
            sub = [r for r in rest if r.preset == preset]
            ns = sorted({r.first.get("n_studies") for r in sub})
            lines += [f"### `{preset}` scanner preset ({', '.join(map(str, ns))} test studies)",
                      "", *_table(sub, rare), ""]
    lines += _notes(rare) + ["## Commands", "",
                             "Each row's evaluation, as recorded in its metrics file:", ""]
    for r in rows:
        for s in sorted(r.metrics):
            cmd = _get(r.metrics[s], "source", "command")
            lines.append(f"* {r.folders[s]}: `{cmd}`" if cmd else f"* {r.folders[s]}: (no "
                         "command recorded)")
    return "\n".join(lines) + "\n"


def _notes(rare: list[str]) -> list[str]:
    return ["## How to read the columns", "",
            "* Protocol: **end-to-end** = test (and val) studies ingested as a user's files "
            "(`echosonar ingest SIM --end-to-end`): views from the view classifier, sector and "
            "cardiac phases estimated from the images; the manifest is read only for the truth. "
            "**ORACLE** = true views, sectors and phases (labelled wherever used).",
            "* macro BAcc: mean over labels of (sensitivity + specificity) / 2 "
            "(`echosonar.utils.metrics`, the one implementation); labels with a single class in "
            "the split are excluded and listed in each metrics file. mean ± sd over seeds; the "
            "CI is the 1,000-resample bootstrap of the first seed.",
            f"* rare-4: mean BAcc of the 4 labels with the fewest training positives "
            f"({', '.join(rare)}).",
            "* GREEN-rule: GREEN's formula with a deterministic echo judge that matches only "
            "clinically significant (abnormal) findings; abnormal-finding F1 of the report text. "
            "Not comparable with LLM-judged GREEN values.",
            "* well-formed / agreement: under free decoding only; a guided row's are forced by "
            "construction and shown as `forced`.",
            "* reasoning lines' findings: the findings the reasoning lines conclude, scored "
            "as if they were the answer (a malformed generation predicts nothing); a "
            "diagnostic of where the decision is lost, not the model's answer.",
            "* citations exact: of the boxes and numbers the reasoning cites, the share equal "
            "to the prompt's detector evidence verbatim (`echosonar.reason.grounding`; invented "
            "ones count as wrong); `–` for outputs measured before the column existed.",
            "* macro AUROC: from per-label scores -- the baselines' probabilities, EchoSonar-R's "
            "label head (so for a VLM row it is the head's, not the generated answer's).",
            "* label head @ val thr: the model's label head at thresholds chosen on val "
            "(not the generated answer).", ""]


def add_arguments(parser: Any) -> None:
    parser.add_argument("eval_dir", metavar="EVAL",
                        help="folder of evaluation outputs: EVAL/<row>[_s<seed>]/metrics_*.json")
    parser.add_argument("--out", default="docs/RESULTS.md", help="Markdown file to write")
    parser.add_argument("--title", default="EchoSonar results")
    parser.add_argument("--intro", default="", help="a paragraph under the title (the data "
                        "and budget, in words)")
    parser.add_argument("--min-seeds", type=int, default=3,
                        help="seeds a row needs to be a headline row")


def run(args: Any) -> int:
    import sys

    from echosonar.io.atomic import atomic_write_text

    try:
        md = render(args.eval_dir, args.title, args.intro, args.min_seeds)
    except (FileNotFoundError, ValueError) as e:
        print(f"echosonar results: {e}", file=sys.stderr)
        return 2
    atomic_write_text(Path(args.out), md)
    print(f"wrote {args.out}")
    return 0
