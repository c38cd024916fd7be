"""The predictions file, the single scoring path and ``echosonar evaluate``."""

import json

import numpy as np
import pytest

from echosonar.cli import main
from echosonar.config.evaluate import EvalConfig
from echosonar.evaluate.predictions import (
    PredictionsError,
    StudyPrediction,
    prediction_from_generation,
    predictions_from_scores,
    read_predictions,
    write_predictions,
)
from echosonar.evaluate.run import evaluate_predictions, predict_vlm, resolve_source
from echosonar.taxonomy import LABEL_KEYS
from echosonar.textformat import target_text


class _FakeEmbedder:
    def cosine(self, refs, hyps):
        return np.array([float(r == h and bool(h)) for r, h in zip(refs, hyps, strict=True)])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from echosonar.reason.synthetic import write_synthetic_cache

    root = tmp_path_factory.mktemp("feat")
    studies = write_synthetic_cache(root, {"train": 12, "test": 8}, d_enc=8, d_det=4,
                                    n_tokens=2)
    return root, [s for s in studies if s.split == "test"]


def _oracle(studies, break_first=False):
    preds = {}
    for i, sf in enumerate(studies):
        g = target_text(sf.reasoning, sf.labels, sf.report)
        if break_first and i == 0:
            g = g.replace("</answer>", "")
        preds[sf.key] = prediction_from_generation(g, {k: float(sf.labels[k]) for k in LABEL_KEYS})
    return preds


def test_predictions_file_round_trip(tmp_path):
    p = {"s1": StudyPrediction({"lv_enlargement"}, {k: 0.1 for k in LABEL_KEYS}, "gen",
                               {"LV": "x"}, False),
         "s2": StudyPrediction({"healthy"})}
    path = write_predictions(tmp_path / "p.json", p, "m", "test", budget="tiny")
    meta, back = read_predictions(path)
    assert meta["method"] == "m" and meta["budget"] == "tiny"
    assert back["s1"].labels == {"lv_enlargement"} and back["s1"].report == {"LV": "x"}
    assert back["s1"].well_formed is False and back["s2"].scores is None
    # Baseline-style files give labels as a {label: 0/1} object; unknown labels are refused.
    raw = json.loads(path.read_text())
    raw["studies"]["s2"]["labels"] = {"healthy": 1, "nonsense": 0}
    path.write_text(json.dumps(raw))
    with pytest.raises(PredictionsError, match="unknown label"):
        read_predictions(path)
    thr = predictions_from_scores(["a"], np.full((1, len(LABEL_KEYS)), 0.6), 0.5)
    assert thr["a"].labels == set(LABEL_KEYS)


def test_oracle_scores_and_malformed_counts_as_wrong(cache):
    root, studies = cache
    truth = [{"key": s.key, "labels": s.labels, "report": s.report} for s in studies]
    cfg = EvalConfig(bootstrap=50, meteor=False)
    m = evaluate_predictions(_oracle(studies), truth, cfg, embedder=_FakeEmbedder())
    c = m["classification"]
    assert c["macro_balanced_accuracy"] == 1.0 and c["exact_match"] == 1.0
    assert m["well_formed_rate"] == 1.0 and m["green_rule"]["green_rule"] == 1.0
    assert m["text"]["rougeL"] == pytest.approx(1.0) and m["text"]["embed_cosine"] == 1.0
    assert len(m["rare_labels"]) == 4 and "healthy" not in m["rare_labels"]
    broken = evaluate_predictions(_oracle(studies, True), truth, cfg, embedder=_FakeEmbedder())
    assert broken["well_formed_rate"] == pytest.approx(7 / 8)
    assert broken["classification"]["exact_match"] == pytest.approx(7 / 8)
    assert broken["green_rule"]["per_study"][0] == 0.0
    with pytest.raises(ValueError, match="have no prediction"):
        evaluate_predictions({}, truth, cfg)


def test_reasoning_lines_are_scored_apart_from_the_answer(cache):
    """The diagnostic row scores the findings the reasoning lines conclude: an answer that
    drops what its reasoning found loses answer BAcc, not the lines' BAcc."""
    from echosonar.textformat import parse_generation, render_answer

    root, studies = cache
    truth = [{"key": s.key, "labels": s.labels, "report": s.report} for s in studies]
    cfg = EvalConfig(bootstrap=20, meteor=False, text_metrics=False)
    good = _oracle(studies)
    m = evaluate_predictions(good, truth, cfg)
    lines_bacc = m["reasoning_lines"]["macro_bacc"]
    assert lines_bacc > 0.5  # the reference reasoning concludes the visible findings
    healthy_answer = {}
    for sf in studies:  # same reasoning, every answer says healthy
        g = good[sf.key].generation
        think = g[:g.index("<answer>")]
        g2 = think + render_answer([], parse_generation(g).sections)
        healthy_answer[sf.key] = prediction_from_generation(g2)
    h = evaluate_predictions(healthy_answer, truth, cfg)
    assert h["classification"]["macro_balanced_accuracy"] == pytest.approx(0.5)
    assert h["reasoning_lines"]["macro_bacc"] == pytest.approx(lines_bacc)


def test_predict_vlm_uses_the_model_interface():
    from echosonar.schema import StudyFeatures
    from echosonar.taxonomy import REPORT_SECTIONS, VIEWS
    from echosonar.textformat import render_generation, render_view_line

    a4c = ("view A4C: structures LV (1,1,50,50). evidence: big. findings: LV enlargement. "
           "implication: remodelling.")
    good = render_generation([a4c] + [render_view_line(v, None) for v in VIEWS[1:]],
                             ["LV enlargement"], {s: "Text" for s in REPORT_SECTIONS})

    class Model:
        def generate(self, batch, max_new_tokens, do_sample, thresholds=None, engine="auto",
                     return_scores=False):
            import torch

            assert do_sample is False and thresholds is None and engine == "int8"
            assert return_scores  # one prompt pass gives the scores too
            return ([[good] if sf.key == "a" else ["garbage"] for sf in batch],
                    torch.full((len(batch), len(LABEL_KEYS)), 0.25))

    studies = [StudyFeatures(key=k, views=[]) for k in ("a", "b", "c")]
    preds = predict_vlm(Model(), studies, batch_size=2, log=lambda s: None, engine="int8")
    assert preds["a"].labels == {"lv_enlargement"} and preds["a"].well_formed
    assert preds["b"].labels == set() and preds["b"].well_formed is False
    assert preds["c"].scores["healthy"] == 0.25


def test_cli_evaluate_predictions_file(cache, tmp_path, capsys):
    root, studies = cache
    run = tmp_path / "baseline"
    write_predictions(run / "predictions_test.json", _oracle(studies, True), "oracle", "test")
    assert resolve_source(run, "test") == ("predictions", run / "predictions_test.json")
    rc = main(["evaluate", str(run), "--features", str(root), "--set", "eval.embedding=false",
               "--set", "eval.meteor=false", "--set", "eval.bootstrap=20"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "oracle: 8 studies" in out and "well-formed 87.5%" in out
    m = json.loads((run / "metrics_test.json").read_text())
    assert m["source"]["kind"] == "predictions" and m["text"]["meteor"] is None
    md = (run / "metrics_test.md").read_text()
    assert "| macro BAcc (%) |" in md and "| GREEN-rule |" in md
    assert "| detector cut-off rule: macro BAcc (%)" in md and 0 <= m["cutoff_rule"]["macro_bacc"] <= 1
    # Wrong split or a folder with nothing to score: a clear error, exit code 2.
    assert main(["evaluate", str(run), "--features", str(root), "--split", "val"]) == 2
    assert "no predictions_val.json" in capsys.readouterr().err


def test_label_head_thresholds_come_from_val(tmp_path):
    import torch

    from echosonar.evaluate.run import label_head_at_val_thresholds
    from echosonar.reason.synthetic import write_synthetic_cache

    studies = write_synthetic_cache(tmp_path, {"val": 10, "test": 10}, d_enc=8, d_det=4,
                                    n_tokens=2)
    test = [sf for sf in studies if sf.split == "test"]
    truth = [{"key": sf.key, "labels": sf.labels} for sf in test]

    def head(sf, shift):  # separable, but every score sits far below 0.5
        return [0.1 + 0.2 * sf.labels[k] + shift for k in LABEL_KEYS]

    class Model:
        def label_scores(self, batch):
            return torch.tensor([head(sf, 0.0) for sf in batch])

    preds = {sf.key: StudyPrediction(labels=set(), scores=dict(zip(LABEL_KEYS, head(sf, 0.05),
                                                                  strict=True))) for sf in test}
    res = label_head_at_val_thresholds(Model(), tmp_path, preds, truth)
    val = [sf for sf in studies if sf.split == "val"]
    seen = [k for k in LABEL_KEYS if len({sf.labels[k] for sf in val}) == 2]
    assert res["n_val"] == 10 and len(seen) >= 3
    for k in seen:  # a val threshold between the classes separates the test split too
        v = res["per_label"][k]
        assert 0.1 < v["thr"] <= 0.3 and v["bacc"] in (None, 1.0), (k, v)
    # scores shifted past the val thresholds in the other direction are no longer separable
    preds = {k: StudyPrediction(labels=set(), scores={c: s - 0.15 for c, s in p.scores.items()})
             for k, p in preds.items()}
    shifted = label_head_at_val_thresholds(Model(), tmp_path, preds, truth)
    assert shifted["macro_bacc"] < res["macro_bacc"]
    no_val = tmp_path / "noval"
    write_synthetic_cache(no_val, {"test": 4}, d_enc=8, d_det=4, n_tokens=2)
    assert label_head_at_val_thresholds(Model(), no_val, preds, truth) is None


def test_decoding_thresholds_come_from_val_only(tmp_path):
    import dataclasses

    import torch

    from echosonar.config.evaluate import EvalConfig
    from echosonar.evaluate.run import decoding_thresholds
    from echosonar.reason.synthetic import write_synthetic_cache

    write_synthetic_cache(tmp_path, {"val": 6, "test": 4}, d_enc=8, d_det=4, n_tokens=2)

    class Model:
        seen: list = []

        def label_scores(self, batch):
            self.seen.extend(sf.split for sf in batch)
            return torch.full((len(batch), len(LABEL_KEYS)), 0.25)

    assert EvalConfig().decoding == "free"  # the model's own answer is the default
    cfg = EvalConfig(decoding="guided")
    m = Model()
    thr = decoding_thresholds(m, tmp_path, cfg, log=lambda s: None)
    assert set(thr) == set(LABEL_KEYS) and set(m.seen) == {"val"}
    assert decoding_thresholds(m, tmp_path, dataclasses.replace(cfg, decoding="free")) is None
    with pytest.raises(ValueError, match="val split"):
        decoding_thresholds(m, tmp_path, dataclasses.replace(cfg, split="val"))
    with pytest.raises(ValueError, match="'guided' or 'free'"):
        decoding_thresholds(m, tmp_path, dataclasses.replace(cfg, decoding="beam"))
    no_val = tmp_path / "noval"
    write_synthetic_cache(no_val, {"test": 4}, d_enc=8, d_det=4, n_tokens=2)
    with pytest.raises(ValueError, match="labelled val studies"):
        decoding_thresholds(m, no_val, cfg, log=lambda s: None)


def test_cutoff_rule_reference_row():
    import dataclasses

    from echosonar.evaluate.cutoff_rule import cutoff_rule_metrics
    from echosonar.reason.synthetic import synthetic_studies

    base = synthetic_studies(4, seed=3, n_tokens=2)
    neg = {k: 0 for k in LABEL_KEYS}
    cases = [({"tr_jet_ratio": 0.5}, "tricuspid_regurgitation"),   # called, right
             ({"tr_jet_ratio": 0.1}, "tricuspid_regurgitation"),   # missed
             ({"lvedd_cm": 5.5}, "healthy"),                         # women-only cut-off: not called
             ({"tr_jet_ratio": 0.3}, "healthy")]                     # false positive
    studies = []
    for sf, (meas, label) in zip(base, cases, strict=True):
        views = [dataclasses.replace(sf.views[0], measurements=meas)]
        studies.append(dataclasses.replace(sf, views=views, labels={**neg, label: 1}))
    c = cutoff_rule_metrics(studies, n_boot=0)["per_label"]
    tr, healthy = c["tricuspid_regurgitation"], c["healthy"]
    assert (tr["sensitivity"], tr["specificity"]) == (0.5, 0.5)
    assert (healthy["sensitivity"], healthy["specificity"]) == (0.5, 0.5)
    assert c["aortic_stenosis"]["n_pred_pos"] == 0
    with pytest.raises(ValueError, match="labelled"):
        cutoff_rule_metrics([dataclasses.replace(studies[0], labels=None)])
