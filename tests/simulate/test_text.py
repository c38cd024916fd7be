"""Targets: reasoning and report mention exactly the positive findings; phrase-bank rules."""

from __future__ import annotations

import re

import numpy as np
import pytest

from echosonar import phrases
from echosonar import taxonomy as tx
from echosonar.config.sim import SimConfig
from echosonar.simulate.presets import resolve
from echosonar.simulate.spec import spec_for_index, study_rng
from echosonar.simulate.text import reasoning_text, report_sections
from echosonar.textformat import parse_generation, target_text


def _fake_boxes(views):
    return {v: {s: [0.1, 0.2, 0.5, 0.6] for s in tx.VIEW_STRUCTURES[v]} for v in views}


@pytest.fixture(scope="module")
def studies():
    cfg = resolve(SimConfig(missing_view_prob=0.3))
    out = []
    for i in range(150):
        s = spec_for_index(cfg, i)
        rng = study_rng(cfg.seed, i, 100)
        out.append((s, reasoning_text(s.measurements, s.labels, _fake_boxes(s.views), rng),
                    report_sections(s.measurements, s.labels, rng, s.views)))
    return out


def test_targets_parse_and_match_labels(studies):
    for s, reasoning, report in studies:
        p = parse_generation(target_text(reasoning, s.labels, report))
        assert p.well_formed, p.errors
        positives = {k for k, v in s.labels.items() if v}
        assert p.findings == positives
        assert p.reasoning_findings == positives - {"healthy"}
        assert list(p.views) == list(tx.VIEWS)
        for v, vr in p.views.items():
            assert vr.acquired == (v in s.views)
            for name in vr.findings:                     # findings only where visible
                assert v in tx.FINDING_BY_NAME[name].views
            for name in vr.not_assessable:               # and never when assessable elsewhere
                assert not tx.assessable(tx.FINDING_BY_NAME[name].key, s.views)
        assert set(p.sections) == set(tx.REPORT_SECTIONS)


def test_report_mentions_exactly_the_positive_findings(studies):
    for s, _, report in studies:
        positives = {f.key: f.severity(s.measurements) for f in tx.FINDINGS if s.labels[f.key]}
        found = phrases.extract_findings("\n".join(report.values()))
        assert found == positives, (s.key, found, positives, report)
        for sec, text in report.items():             # each finding in its own section
            for key in phrases.extract_findings(text):
                assert sec in (tx.FINDING_BY_KEY[key].section, "conclusion")


def test_missing_view_lists_only_unassessable_findings(studies):
    s, reasoning, _ = next(x for x in studies if "PSAX_AV" not in x[0].views)
    line = next(ln for ln in reasoning.splitlines() if ln.startswith("view PSAX_AV"))
    assert "not acquired" in line and "bicuspid aortic valve" in line


def test_wording_varies(studies):
    lv = {r["LV"] for _, _, r in studies}
    assert len(lv) > 30


def _cues(text):
    return [c for c in phrases.NEGATION_CUES
            if re.search(r"(?<![a-z])" + re.escape(c) + r"(?![a-z])", text.lower())]


def test_phrase_bank_rules():
    fields = dict(ef=30, lvedd=6.1, ivs=1.4, lvpw=1.3, wall=1.4, la=4.6, ra=5.0, rv=4.8,
                  avo=0.9, mr=35, tr=30, ar=40, pe=1.2)
    for key, tpls in phrases.POSITIVE_TEMPLATES.items():
        assert key in tx.FINDING_BY_KEY and key in phrases.FINDING_PHRASES
        for t in tpls:
            for np_ in phrases.FINDING_PHRASES[key]:
                text = t.format(sev="moderate", Sev="Moderate", np=np_, Np=np_.capitalize(),
                                **fields)
                assert not _cues(text), (key, text)
                assert phrases.sentence_polarity(text)[:2] == (key, "moderate"), (key, text)
    for key, tpls in phrases.NEGATIVE_TEMPLATES.items():
        for t in tpls:
            text = t.format(**fields)
            assert _cues(text), (key, text)
            assert phrases.extract_findings(text) == {}
    for key in phrases.ASSESSED_THING:
        for t in phrases.NOT_ASSESSED_TEMPLATES:
            assert phrases.extract_findings(t.format(thing=phrases.ASSESSED_THING[key])) == {}


def test_severity_words_cover_taxonomy():
    rng = np.random.default_rng(0)
    cfg = resolve(SimConfig())
    for i in range(200):
        m = spec_for_index(cfg, i).measurements
        for f in tx.FINDINGS:
            if f.positive(m):
                assert f.severity(m) in phrases.SEVERITY_WORDS
    assert rng is not None
