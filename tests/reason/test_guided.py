"""Guided decoding: the skeleton is forced, findings lists are the head's calls, free text is
the LM's (reason.guided)."""

import pytest
import torch

from echosonar.reason import guided
from echosonar.reason.guided import (
    GuidedDecoder,
    answer_findings_text,
    decisions,
    not_acquired_line,
)
from echosonar.reason.synthetic import tiny_setup
from echosonar.taxonomy import (
    FINDING_BY_KEY,
    LABEL_KEYS,
    REPORT_SECTION_TITLES,
    REPORT_SECTIONS,
    VIEWS,
    assessable,
)
from echosonar.textformat import parse_generation


@pytest.fixture(scope="module")
def setup():
    return tiny_setup(n=4, seed=3)


class ScriptedLM:
    """Stands in for the LM: in each free segment it 'wants' to write a fixed text (one token
    per step, as logits with a single maximum), whatever the decoder forced before."""

    def __init__(self, tok, dec: GuidedDecoder, scripts: dict[str, str], repeat: str = ""):
        self.tok, self.dec = tok, dec
        self.scripts = {m: tok(s, add_special_tokens=False)["input_ids"]
                        for m, s in scripts.items()}
        self.repeat = tok(repeat, add_special_tokens=False)["input_ids"] if repeat else []
        self.pos, self.seg = 0, None

    def logits(self) -> torch.Tensor:
        r = self.dec.rows[0]
        out = torch.zeros(1, len(self.dec.text))
        if r.queue or r.mode in ("start", "done", "closing"):
            return out  # the decoder ignores the LM here
        seg = (r.mode, r.view, r.section)
        if seg != self.seg:
            self.seg, self.pos = seg, 0
        script = self.scripts[r.mode]
        t = script[self.pos] if self.pos < len(script) else self.repeat[
            (self.pos - len(script)) % len(self.repeat)]
        self.pos += 1
        out[0, t] = 10.0
        return out


def run_scripted(tok, acquired, called, scripts, repeat="", steps=4000, boxes=None):
    dec = GuidedDecoder(tok, [acquired], [called], None if boxes is None else [boxes])
    lm = ScriptedLM(tok, dec, scripts, repeat)
    ids = []
    for _ in range(steps):
        out = dec(lm.logits()).view(-1).tolist()  # one token, or a forced run
        ids += out
        if tok.eos_token_id in out:
            ids = ids[:ids.index(tok.eos_token_id)]
            break
    else:
        raise AssertionError("guided decoding never reached EOS")
    return tok.decode(ids, skip_special_tokens=True)


SCRIPTS = {"evidence": " looks normal. findings:",
           "implication": " nothing to add\n", "report": " Normal appearances\n"}


def test_findings_lists_come_from_the_head_not_the_lm(setup):
    _, tok, _ = setup
    acquired = ["A4C", "PLAX", "A4C_COLOR"]
    called = ["lv_enlargement", "tricuspid_regurgitation"]
    boxes = {"A4C": {"LA": [0.4, 0.6, 0.6, 0.9], "LV": [0.1, 0.1, 0.5, 0.6]}}
    text = run_scripted(tok, acquired, called, SCRIPTS, boxes=boxes)
    p = parse_generation(text)
    assert p.well_formed, p.errors
    assert p.findings == set(called)
    # every view in taxonomy order; the LM never chose a findings list
    assert list(p.views) == list(VIEWS)
    for v in VIEWS:
        if v in acquired:
            want = [f for f in called if v in FINDING_BY_KEY[f].views]
            assert sorted(FINDING_BY_KEY[f].name for f in want) == sorted(p.views[v].findings)
            assert p.views[v].evidence == "looks normal"
            # the citations are the detector's boxes, in STRUCTURES order ('none' without any)
            assert p.views[v].structures == ({"LV": [0.1, 0.1, 0.5, 0.6],
                                              "LA": [0.4, 0.6, 0.6, 0.9]} if v == "A4C" else {})
        else:
            assert not p.views[v].acquired
            assert not_acquired_line(v, acquired) in text
    assert p.reasoning_findings == set(called)  # reasoning and answer agree
    assert all(p.sections[s] == "Normal appearances" for s in REPORT_SECTIONS)
    assert text.rstrip().endswith("</answer>")


def test_nothing_called_is_healthy_and_caps_end_runaway_segments(setup, monkeypatch):
    _, tok, _ = setup
    monkeypatch.setattr(guided, "EVIDENCE_CAP", 6)
    monkeypatch.setattr(guided, "SECTION_CAP", 5)
    monkeypatch.setattr(guided, "IMPLICATION_CAP", 4)
    # the LM never writes 'findings:' nor a line break: the caps move the skeleton on
    scripts = {"evidence": " long", "implication": " more",
               "report": " text"}
    text = run_scripted(tok, ["PSAX_AV"], [], scripts, repeat=" and more")
    p = parse_generation(text)
    assert p.well_formed, p.errors
    assert p.findings == {"healthy"} and p.reasoning_findings == set()
    assert p.views["PSAX_AV"].findings == []


def test_no_line_break_or_tag_where_the_line_must_go_on(setup):
    _, tok, _ = setup
    # an LM that would break the line (or close the think block) inside the evidence
    scripts = {"evidence": " x\n</think> y. findings:",
               "implication": " y\n", "report": "\n Fine\n"}
    text = run_scripted(tok, ["A2C"], ["la_enlargement"], scripts)
    p = parse_generation(text)
    assert text.count("</think>") == 1
    assert p.well_formed, p.errors  # the newline/tag tokens were masked; section not empty
    assert p.findings == {"la_enlargement"}


def test_line_boundaries_other_than_newline_are_never_written(setup):
    _, tok, _ = setup
    # str.splitlines() (the parser) also breaks at \r, \x1d, \u2028 ...: an LM that wants
    # one of them (or a byte fragment of one) in a free segment gets its next-best token
    odd = [i for i in range(len(tok)) if len(("." + tok.decode([i]) + ".").splitlines()) > 1
           and "\n" not in tok.decode([i])]
    dec = GuidedDecoder(tok, [["A2C"]], [[]])
    assert odd and bool(dec.bans[:, odd].all())  # (\u2028 below is 3 byte tokens here)
    scripts = {"evidence": " x\r y\x1d z. findings:", "implication": " a\u2028b\n",
               "report": " Fine\n"}
    text = run_scripted(tok, ["A2C"], [], scripts)
    assert "\r" not in text and "\x1d" not in text and "\u2028" not in text
    assert parse_generation(text).well_formed, parse_generation(text).errors


def test_forced_runs_and_engines_give_the_same_text(setup):
    studies, _, model = setup
    thr = {k: 0.5 for k in LABEL_KEYS}
    model.eval()
    with torch.no_grad():
        out = {(engine, runs): guided.guided_generate(model, studies[:3], thr, 4000, engine,
                                                      runs)[0]
               for engine in ("lean", "hf") for runs in (True, False)}
    assert len({tuple(v) for v in out.values()}) == 1
    assert all(parse_generation(t).well_formed for t in out["lean", True])


def test_int8_guided_outputs_parse(setup):
    studies, _, model = setup
    thr = {k: 0.5 for k in LABEL_KEYS}
    model.eval()
    texts = guided.guided_generate(model, studies[:2], thr, 4000, engine="int8")[0]
    for t in texts:
        assert parse_generation(t).well_formed, parse_generation(t).errors


def test_real_model_generate_guided(setup):
    studies, _, model = setup
    with torch.no_grad():
        scores = model.label_scores(studies[:2]).tolist()
    thr = {k: 0.5 for k in LABEL_KEYS}
    thr["pericardial_effusion"] = thr["bicuspid_aortic_valve"] = 0.0  # always called ...
    texts = [t[0] for t in model.generate(studies[:2], max_new_tokens=4000, thresholds=thr)]
    for sf, text, sc in zip(studies[:2], texts, scores, strict=True):
        acquired = [v.view for v in sf.views]
        called = [k for k in decisions(sc, thr) if assessable(k, tuple(acquired))]
        assert "pericardial_effusion" in called or not assessable("pericardial_effusion",
                                                                   tuple(acquired))
        # ... unless no acquired view can show it (bicuspid: PSAX_AV only)
        assert ("bicuspid_aortic_valve" in parse_generation(text).findings) == \
            ("PSAX_AV" in acquired)
        assert all(assessable(k, tuple(acquired)) for k in parse_generation(text).findings
                   if k != "healthy")
        assert text.count("<think>") == text.count("</answer>") == 1
        answer = text.split("<answer>", 1)[1].splitlines()[1]
        assert answer == "findings: " + answer_findings_text(called)
        titles = [ln.split(":")[0] for ln in text.split("report:", 1)[1].strip().splitlines()]
        assert titles[:-1] == [REPORT_SECTION_TITLES[s] for s in REPORT_SECTIONS]
        starts = [ln.split(":")[0] for ln in text.split("</think>")[0].splitlines()[1:]]
        assert starts == [f"view {v}" for v in VIEWS]
        for v in VIEWS:
            if v not in acquired:
                assert not_acquired_line(v, acquired) in text
        # even an untrained LM's output parses: the free parts cannot break the format
        p = parse_generation(text)
        assert p.well_formed, p.errors
        for v in sf.views:
            assert set(p.views[v.view].structures) == set(v.boxes)
    with pytest.raises(ValueError, match="greedy"):
        model.generate(studies[:1], do_sample=True, thresholds=thr)


def test_decisions_thresholds():
    s = [0.3] * len(LABEL_KEYS)
    assert decisions(s, {k: 0.5 for k in LABEL_KEYS}) == []
    assert decisions(s, {k: 0.3 for k in LABEL_KEYS}) == [
        k for k in LABEL_KEYS if k != "healthy"]  # at the threshold counts; never 'healthy'
