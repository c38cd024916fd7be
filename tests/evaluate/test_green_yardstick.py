"""The GREEN-rule as a yardstick: on freshly simulated studies a constant healthy report, shuffled
reports and a reference with a finding dropped must score below the reference itself; on
hand-written wording the simulator never uses, the judge must read the findings right; and the
judge must not read the simulator's own phrase banks."""

import ast
import json
import random
from pathlib import Path

import pytest

from echosonar.config.sim import SimConfig
from echosonar.evaluate.green import compare_reports, extract_findings, green_rule_batch
from echosonar.evaluate.green_extract import report_sections, sentences
from echosonar.evaluate.green_lexicon import GRADE_RANK
from echosonar.simulate.spec import spec_for_index, study_rng
from echosonar.simulate.text import report_sections as write_report
from echosonar.taxonomy import FINDINGS, REFERENCE_NORMAL, labels_from_measurements

PARAPHRASES = Path(__file__).parent / "data" / "green_paraphrases.json"


def simulated_reports(n, seed):
    """``[(measurements, labels, views, report)]`` of ``n`` studies as the simulator writes
    them (truth and text only: nothing is rendered)."""
    cfg = SimConfig(seed=seed)
    out = []
    for i in range(n):
        spec = spec_for_index(cfg, i)
        rep = write_report(spec.measurements, spec.labels, study_rng(seed, i, 100), spec.views)
        out.append((spec.measurements, spec.labels, spec.views, rep))
    return out


def without_finding(m, key):
    """Measurements with ``key``'s reading set back to a normal adult's, every other label
    unchanged."""
    labels = labels_from_measurements(m)
    out = dict(m)
    for k, v in REFERENCE_NORMAL.items():
        trial = {**out, k: v}
        tl = labels_from_measurements(trial)
        if all(tl[o] == labels[o] for o in labels if o not in (key, "healthy")):
            out = trial
        if not labels_from_measurements(out)[key]:
            return out
    raise AssertionError(f"could not drop {key}")


@pytest.fixture(scope="module")
def studies():
    return simulated_reports(120, seed=17)


def test_constant_healthy_report_scores_low_references_score_one(studies):
    refs = [rep for *_, rep in studies]
    healthy = [rep for _, labels, _, rep in studies if labels["healthy"]]
    sick_share = 1 - len(healthy) / len(refs)
    assert healthy and sick_share > 0.5
    const = green_rule_batch(refs, [healthy[0]] * len(refs))
    assert const["green_rule"] <= 0.5
    # It is right exactly on the healthy studies and earns nothing on the others.
    assert const["green_rule"] == pytest.approx(1 - sick_share)
    assert const["abnormal_recall"] == 0.0 and const["abnormal_f1"] == 0.0
    own = green_rule_batch(refs, refs)
    assert own["green_rule"] == 1.0 and own["abnormal_f1"] == 1.0
    shuffled = refs[:]
    random.Random(7).shuffle(shuffled)
    assert green_rule_batch(refs, shuffled)["green_rule"] <= 0.5


def test_a_dropped_abnormal_finding_costs_score(studies):
    n = 0
    for i, (m, labels, views, rep) in enumerate(studies):
        for f in [f for f in FINDINGS if labels[f.key]][:2]:
            m2 = without_finding(m, f.key)
            dropped = write_report(m2, labels_from_measurements(m2), study_rng(17, i, 100), views)
            r = compare_reports(rep, dropped)
            # missed (b), or misgraded (d) where the rewritten text calls it trace/trivial
            assert r.score < 1.0 and any(e.startswith(("(b)", "(d)")) and f.key in e
                                         for e in r.errors), r.errors
            n += 1
    assert n > 50


def _rank(grade):
    return None if grade is None else GRADE_RANK[grade]


def test_judge_reads_held_out_clinical_wording():
    cases = json.loads(PARAPHRASES.read_text())["cases"]
    assert len(cases) >= 40
    wrong = []
    for c in cases:
        got = {k: f.severity for k, f in extract_findings(c["report"]).items() if f.present}
        want = c["abnormal"]
        if set(got) != set(want) or any(_rank(got[k]) != _rank(want[k]) for k in want):
            wrong.append((c["report"], want, got))
    accuracy = 1 - len(wrong) / len(cases)
    print(f"GREEN-rule judge on {len(cases)} held-out paraphrased reports: "
          f"{100 * accuracy:.1f} % read exactly right")
    assert accuracy >= 0.9, wrong


def test_paraphrases_are_wording_the_simulator_never_writes():
    written = set()
    for seed in (0, 1):
        for _, _, _, rep in simulated_reports(150, seed):
            written |= {s for _, text in report_sections(rep) for s in sentences(text)}
    cases = json.loads(PARAPHRASES.read_text())["cases"]
    mine = {s for c in cases for _, text in report_sections(c["report"]) for s in sentences(text)}
    assert len(written) > 500 and not mine & written


def test_judge_does_not_import_the_simulators_phrase_banks():
    src = Path(compare_reports.__code__.co_filename).parent
    for name in ("green.py", "green_extract.py", "green_lexicon.py"):
        tree = ast.parse((src / name).read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in mods if m and ("phrases" in m or "simulate" in m)}, name
