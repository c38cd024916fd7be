"""Prompt building with 1..6 views: layout, shapes, masks, missing views, the ablation."""

import dataclasses

import numpy as np
import pytest
import torch

from echosonar.reason.prompt import build_prompt, pool_clip_tokens
from echosonar.reason.synthetic import synthetic_studies, tiny_setup
from echosonar.taxonomy import STRUCTURES, VIEWS

K = len(STRUCTURES)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return tiny_setup(n=8, seed=1)


def _with_views(n_views, seed=0, n_tokens=4):
    sf = synthetic_studies(1, seed=seed, n_tokens=n_tokens, min_views=n_views,
                           max_views=n_views)[0]
    assert len(sf.views) == n_views
    return sf


@pytest.mark.parametrize("n_views", range(1, 7))
def test_prompt_layout(n_views):
    sf = _with_views(n_views, seed=n_views)
    p = build_prompt(sf)
    assert p.views == [v for v in VIEWS if v in {x.view for x in sf.views}]  # canonical order
    assert p.text.startswith("<s>") and p.text.endswith("\n<gen>")  # <gen> ends every prompt
    assert p.text.count("<clip>") == p.clip.shape[0] == n_views * 5
    assert p.text.count("<struct>") == p.struct.shape[0] == n_views * K
    assert p.struct.shape[1] == 16 + 1 and p.struct_type.tolist() == list(range(K)) * n_views
    for v in VIEWS:
        assert (f"view {v} (" in p.text) == (v in p.views)  # missing views are absent
    pos = [p.text.index(f"view {v} (") for v in p.views]
    assert pos == sorted(pos)
    block = p.text[pos[0]:]
    assert block.index("<clip>") < block.index("structures:") < block.index("<struct>") \
        < block.index("boxes:")
    first = next(x for x in sf.views if x.view == p.views[0])
    assert next(iter(first.boxes)) in block.split("boxes:")[1].split("\n")[0]
    off = build_prompt(sf, use_structure_tokens=False)
    for s in ("<struct>", "structures:", "boxes:", "measurements:"):
        assert s not in off.text
    assert off.struct.shape[0] == 0 and off.clip.shape == p.clip.shape


def test_other_view_skipped_and_bad_shapes():
    sf = _with_views(2)
    other = dataclasses.replace(sf.views[0], view="OTHER")
    p = build_prompt(dataclasses.replace(sf, views=[other, *sf.views]))
    assert "OTHER" not in p.text and p.clip.shape[0] == 10
    with pytest.raises(ValueError, match="no view"):
        build_prompt(dataclasses.replace(sf, views=[other]))
    bad = dataclasses.replace(sf.views[0], structure_tokens=np.zeros((3, 16), np.float32))
    with pytest.raises(ValueError, match=f"{sf.key}.*structure_tokens"):
        build_prompt(dataclasses.replace(sf, views=[bad]))


def test_pool_clip_tokens():
    t = np.arange(9 * 2, dtype=np.float32).reshape(9, 2)
    assert pool_clip_tokens(t, 0).shape == (9, 2) and pool_clip_tokens(t, 20).shape == (9, 2)
    p = pool_clip_tokens(t, 3)
    assert p.shape == (3, 2) and (p[0] == t[0]).all() and np.allclose(p[1], t[1:5].mean(0))


@pytest.mark.parametrize("structure_tokens", [True, False])
def test_prompt_embeds_shapes_masks_and_placeholders(setup, structure_tokens):
    from echosonar.reason.model import build_model

    _, tok, model = setup
    # text rows must be plain token embeddings: no view-segment rows added here
    cfg = dataclasses.replace(model.config, use_structure_tokens=structure_tokens,
                              view_segments=False)
    model = build_model(cfg, tok, model.feature_dims)
    batch = [_with_views(k, seed=10 + k) for k in (1, 3, 6)]
    emb, mask = model.prompt_embeds(batch)
    ids = model.prompt_ids(batch)
    b, p, h = emb.shape
    assert (b, h) == (3, 32) and mask.shape == (3, p) and p == max(len(x) for x in ids)
    for i, x in enumerate(ids):  # LEFT padding: zeros first, then exactly the prompt
        assert mask[i].tolist() == [0] * (p - len(x)) + [1] * len(x)
    # the 6-view study's clip rows are its projected clip tokens, in order
    sf = batch[2]
    clip = torch.from_numpy(build_prompt(sf, structure_tokens).clip)
    row = torch.tensor([0] * (p - len(ids[2])) + ids[2])
    got = emb[2][row == model.clip_id]
    assert torch.allclose(got, model.clip_proj(clip), atol=1e-6)
    n_struct = int((row == model.struct_id).sum())
    assert n_struct == (6 * K if structure_tokens else 0)
    text_rows = emb[2][(row != model.clip_id) & (row != model.struct_id) & (mask[2] == 1)]
    ref = model.lm.get_input_embeddings()(row[(row != model.clip_id) & (row != model.struct_id)
                                              & (mask[2] == 1)])
    assert torch.equal(text_rows, ref)


def test_feature_width_mismatch_is_a_clear_error(setup):
    _, _, model = setup
    sf = synthetic_studies(1, seed=2, d_enc=8)[0]
    with pytest.raises(ValueError, match=f"study {sf.key}: feature widths"):
        model.prompt_embeds([sf])


def test_measurement_flags_follow_the_finding_rules():
    sf = _with_views(1)
    v = dataclasses.replace(sf.views[0], measurements={"tr_jet_ratio": 0.36, "mr_jet_ratio": 0.1,
                                                       "lvedd_cm": 5.5, "lv_fs_pct": 12.0,
                                                       "pe_depth_cm": float("nan")})
    s = dataclasses.replace(sf, views=[v])
    text = build_prompt(s, measurement_flags=True).text
    assert "tr_jet_ratio 0.36 (past the tricuspid regurgitation cut-off)" in text
    assert "mr_jet_ratio 0.1," in text and "lv_fs_pct 12," in text  # under / no cut-off
    assert "lvedd_cm 5.5 (past the LV enlargement cut-off for women)" in text
    assert "nan" not in text  # a non-finite value is left out, not printed
    plain = build_prompt(s).text  # the default, like LMConfig's
    assert "cut-off" not in plain and "tr_jet_ratio 0.36." in plain


def test_view_segments_mark_each_token_with_its_block(setup):
    """With ``lm.view_segments`` every prompt token of a view's block (header, clip and
    structure placeholders, boxes, measurements) carries that view's segment embedding; the
    study line before the first block and the final <gen> carry segment 0."""
    from echosonar.reason.model import build_model

    _, tok, model = setup
    model = build_model(dataclasses.replace(model.config, view_segments=False), tok,
                        model.feature_dims)
    cfg = dataclasses.replace(model.config, view_segments=True)
    seg_model = build_model(cfg, tok, model.feature_dims)
    sf = _with_views(3, seed=4)
    parts = seg_model.prompt_parts(sf)
    enc = tok(parts.text, add_special_tokens=False, return_offsets_mapping=True)
    seg = parts.segment_ids(enc["offset_mapping"])
    pieces = [parts.text[a:b] for a, b in enc["offset_mapping"]]
    assert seg[0] == 0 and seg[-1] == 0 and pieces[-1] == "<gen>"
    for v in parts.views:
        k = VIEWS.index(v) + 1
        block = "".join(p for p, s in zip(pieces, seg, strict=True) if s == k)
        assert block.startswith(f"view {v} (") and "<clip>" in block
        assert block.count("view ") == 1 and "measurements:" in block
    # the embeddings differ from the plain model's exactly by the segment rows
    seg_model.load_state_dict(model.state_dict(), strict=False)
    e0, _ = model.prompt_embeds([sf])
    e1, _ = seg_model.prompt_embeds([sf])
    want = seg_model.view_segment(torch.from_numpy(seg))
    assert torch.allclose(e1[0] - e0[0], want, atol=1e-6)
