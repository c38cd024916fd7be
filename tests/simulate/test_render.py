"""Rendering: shapes, boxes inside the sector and following the cycle, phase-correct jets,
view-visibility rules (a finding changes pixels only in the views that show it), determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from echosonar import taxonomy as tx
from echosonar.simulate.render import render_clip, sector_geometry
from echosonar.simulate.spec import spec_for_index, study_rng

from .conftest import tiny_cfg

CFG = tiny_cfg()


def _with(spec, **meas):
    m = dict(spec.measurements, **meas)
    from echosonar.simulate.spec import lvesd_from_ef

    m["lvesd_cm"] = lvesd_from_ef(m["lvedd_cm"], m["ef_pct"])
    return dataclasses.replace(spec, measurements=m, labels=tx.labels_from_measurements(m),
                               views=list(tx.VIEWS))


def _render(spec, view, stream=1):
    return render_clip(spec, view, CFG, study_rng(CFG.seed, spec.index, stream))


@pytest.fixture(scope="module")
def sick():
    """A study with every colour finding and an effusion."""
    return _with(spec_for_index(CFG, 1), mr_jet_ratio=0.45, tr_jet_ratio=0.45,
                 ar_jet_ratio=0.5, pe_depth_cm=1.5)


def _inside_fan(geo, x, y):
    dx, dy = x - geo.apex_x, y - geo.apex_y
    return np.hypot(dx, dy) <= geo.radius + 1.5 and abs(np.arctan2(dx, dy)) <= geo.half_angle + 0.05


@pytest.mark.parametrize("view", tx.VIEWS)
def test_clip_shapes_boxes_and_sector(sick, view):
    frames, meta = _render(sick, view)
    T, S = CFG.frames, CFG.image_size
    assert frames.dtype == np.uint8
    assert frames.shape == ((T, S, S, 3) if view in tx.COLOR_VIEWS else (T, S, S))
    assert meta["ed_frames"] == [0] and 0 < meta["es_frames"][0] < T
    assert len(meta["boxes"]) == T and meta["cm_per_px"] > 0 and meta["fps"] > 5
    geo = sector_geometry(S, CFG.half_angle_deg)
    x0, y0, x1, y1 = meta["sector"]["bbox"]
    expected = set(tx.VIEW_STRUCTURES[view])
    for t, fb in enumerate(meta["boxes"]):
        assert expected <= set(fb), (view, t, set(fb))
        for s, (a, b, c, d) in fb.items():
            assert x0 <= a < c <= x1 and y0 <= b < d <= y1, (view, s, fb[s])
            assert _inside_fan(geo, (a + c) / 2, (b + d) / 2), (view, s)
    # the image outside the sector holds only overlays: the sector itself is not empty
    gray = frames if frames.ndim == 3 else frames.mean(-1)
    assert gray[:, y0:y1, x0:x1].mean() > 10


@pytest.mark.parametrize("view", ["A4C", "A2C", "PLAX"])
def test_lv_box_larger_at_ed_than_es(view):
    spec = spec_for_index(CFG, 2)
    _, meta = _render(spec, view)
    area = [(b["LV"][2] - b["LV"][0]) * (b["LV"][3] - b["LV"][1]) for b in meta["boxes"]]
    assert area[meta["ed_frames"][0]] > area[meta["es_frames"][0]]


def test_jets_only_in_their_views_and_phases(sick):
    cond = {s: views for s, (_, views) in tx.CONDITIONAL_STRUCTURES.items()}
    for view in tx.VIEWS:
        _, meta = _render(sick, view)
        seen = set().union(*meta["boxes"])
        for s in ("MR_JET", "TR_JET", "AR_JET", "PE"):
            assert (s in seen) == (view in cond[s]), (view, s)
        es = meta["es_frames"][0]
        for t, fb in enumerate(meta["boxes"]):
            if "MR_JET" in fb or "TR_JET" in fb:
                assert 0 < t <= es + 1, (view, t)      # systole
            if "AR_JET" in fb:
                assert t > es or t == 0, (view, t)     # diastole (and ED)


def test_no_box_without_finding():
    spec = _with(spec_for_index(CFG, 3), mr_jet_ratio=0.1, tr_jet_ratio=0.05, ar_jet_ratio=0.0,
                 pe_depth_cm=0.2)
    for view in ("A4C_COLOR", "PLAX_COLOR", "A4C", "PLAX"):
        _, meta = _render(spec, view)
        assert not {"MR_JET", "TR_JET", "AR_JET", "PE"} & set().union(*meta["boxes"])


# (finding drivers, a view that must change, views that must not change)
VISIBILITY = [
    ({"av_cusps": 2}, "PSAX_AV", ["PLAX", "A4C", "A2C", "PLAX_COLOR"]),
    ({"rv_basal_cm": 5.2}, "A4C", ["PSAX_AV", "A4C_COLOR", "PLAX"]),
    ({"tr_jet_ratio": 0.5}, "A4C_COLOR", ["A4C", "PSAX_AV"]),
    ({"ar_jet_ratio": 0.5}, "PLAX_COLOR", ["PLAX", "A4C_COLOR"]),
    ({"mv_calc_score": 0.9}, "PLAX", ["A2C", "A4C_COLOR"]),
    ({"la_ap_cm": 5.5}, "A2C", ["PSAX_AV", "PLAX_COLOR"]),
]


@pytest.mark.parametrize("change, shows, hides", VISIBILITY)
def test_findings_visible_only_where_taxonomy_says(change, shows, hides):
    base = _with(spec_for_index(CFG, 4), mr_jet_ratio=0.0, tr_jet_ratio=0.0, ar_jet_ratio=0.0,
                 pe_depth_cm=0.0, av_cusps=3, mv_calc_score=0.1, la_ap_cm=3.4, rv_basal_cm=3.3)
    sick = _with(base, **change)
    assert sum(sick.labels.values()) >= 1 and not sick.labels["healthy"]
    for view in [shows] + hides:
        a, _ = _render(base, view)
        b, _ = _render(sick, view)
        assert (not np.array_equal(a, b)) == (view == shows), (change, view)


def test_render_is_deterministic(sick):
    a, ma = _render(sick, "A4C_COLOR")
    b, mb = _render(sick, "A4C_COLOR")
    assert np.array_equal(a, b) and ma == mb
    c, _ = _render(sick, "A4C_COLOR", stream=9)
    assert not np.array_equal(a, c)


def test_colour_doppler_has_red_and_blue(sick):
    frames, meta = _render(sick, "A4C_COLOR")
    r, g, b = (frames[..., i].astype(int) for i in range(3))
    colour = (np.abs(r - b) > 60)
    es = meta["es_frames"][0]
    dia = (es + CFG.frames) // 2
    # systole: the TR/MR jets (blue-dominant away flow); diastole: inflow toward apex (red)
    assert ((b > r + 60) & colour)[1:es + 1].sum() > 0
    assert ((r > b + 60) & colour)[dia].sum() > 0


def test_realism_softens_and_darkens_but_keeps_geometry():
    """``sim.realism``: 0 is the classic look; 1 darkens the tissue around the heart and softens
    the borders; the boxes (ground truth) do not move and the rng stream is not consumed."""
    spec = spec_for_index(CFG, 0)
    base, mb = _render(spec, "A4C")
    real = dataclasses.replace(CFG, realism=1.0)
    f1, m1 = render_clip(spec, "A4C", real, study_rng(CFG.seed, spec.index, 1))
    f0, _ = render_clip(spec, "A4C", dataclasses.replace(CFG, realism=0.0),
                        study_rng(CFG.seed, spec.index, 1))
    assert np.array_equal(f0, base)
    assert f1.shape == base.shape and f1.dtype == base.dtype and not np.array_equal(f1, base)
    assert m1["boxes"] == mb["boxes"]
    geo = sector_geometry(CFG.image_size, CFG.half_angle_deg)
    lit = base.reshape(base.shape[0], -1)[:, geo.pix].astype(float)
    dim = f1.reshape(f1.shape[0], -1)[:, geo.pix].astype(float)
    # the darker surroundings pull the sector's lower half of brightness down
    assert np.median(dim) < np.median(lit)
