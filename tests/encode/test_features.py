import numpy as np
import pytest
import torch

from echosonar.encode.features import build_feature_cache, encode_clips
from echosonar.encode.models import ClipEncoder
from echosonar.io.features import iter_features, read_index
from echosonar.taxonomy import STRUCTURES

from .helpers import make_studies, tiny_model_config


def _encoder():
    torch.manual_seed(0)
    return ClipEncoder(tiny_model_config()).eval()


def test_feature_cache_round_trip_and_resume(tmp_path):
    enc = _encoder()
    studies = make_studies(5)
    info = {**enc.describe(), "path": "tiny"}
    r = build_feature_cache(studies[:3], tmp_path, enc, info, log=lambda s: None)
    assert r == {"written": 3, "skipped": 0, "total": 3}
    r = build_feature_cache(studies, tmp_path, enc, info, log=lambda s: None)
    assert r == {"written": 2, "skipped": 3, "total": 5}
    idx = read_index(tmp_path)
    assert idx["detector"]["used"] is False and "zeros" in idx["detector"]["note"]
    assert idx["encoder"]["n_tokens"] == 8
    got = {sf.key: sf for sf in iter_features(tmp_path)}
    assert sorted(got) == [s.key for s in studies]
    for st in studies:
        sf = got[st.key]
        assert (sf.labels, sf.measurements, sf.split, sf.report, sf.reasoning) == \
            (st.labels, st.measurements, st.split, st.report, st.reasoning)
        assert [v.view for v in sf.views] == st.views
        ref = encode_clips(enc, st.clips)
        for v, tok in zip(sf.views, ref, strict=True):
            assert v.clip_tokens.shape == (9, 32)
            np.testing.assert_allclose(v.clip_tokens, tok, atol=1e-6)
            assert v.structure_tokens.shape[0] == len(STRUCTURES)
            assert not v.structure_tokens.any() and v.boxes == {}
    assert len(list(iter_features(tmp_path, split="train"))) == \
        sum(s.split == "train" for s in studies)
    with pytest.raises(ValueError, match="another encoder"):
        build_feature_cache(studies, tmp_path, enc, {**info, "path": "other"},
                            log=lambda s: None)


def test_detector_hook_outputs_are_stored(tmp_path):
    enc = _encoder()
    k = len(STRUCTURES)

    def det(clip):
        return (np.full((k, 6), 0.5, np.float32), np.linspace(0, 1, k).astype(np.float32),
                {"LV": [0.1, 0.2, 0.5, 0.6]}, {"lvedd_cm": 5.1})

    build_feature_cache(make_studies(2), tmp_path, enc, {"path": "tiny"}, detect=det,
                        detector_info={"used": True, "dim": 6}, log=lambda s: None)
    sf = next(iter_features(tmp_path))
    v = sf.views[0]
    assert v.structure_tokens.shape == (k, 6) and v.structure_scores[-1] == pytest.approx(1.0)
    assert v.boxes == {"LV": [0.1, 0.2, 0.5, 0.6]} and v.measurements == {"lvedd_cm": 5.1}


def test_detect_stage_hook(tmp_path):
    """The hook speaks the detect stage's API (an untrained detector is enough for shapes)."""
    detect_model = pytest.importorskip("echosonar.detect.model")
    from echosonar.encode.features import detector_hook

    detect_model.build_detector().save_pretrained(tmp_path / "det")
    fn, info = detector_hook(tmp_path / "det")
    tokens, scores, boxes, meas = fn(make_studies(1)[0].clips[0])
    assert tokens.shape == (len(STRUCTURES), info["dim"]) and scores.shape == (len(STRUCTURES),)
    assert info["used"] is True and isinstance(boxes, dict) and isinstance(meas, dict)
