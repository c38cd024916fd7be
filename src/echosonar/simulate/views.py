"""Per-view geometric phantoms (display conventions of the brief, section 4).

Image coordinates are cm with the transducer (sector apex) at ``(0, 0)``, ``x`` to the screen
right and ``z`` the depth, growing downward. Each view paints its anatomy in a heart-fixed frame
(:func:`shapes.to_frame`) onto a :class:`shapes.Canvas`, using the measurements *as visible in
that view* (:func:`visible_measurements`): a finding a sonographer cannot assess in a view is
rendered with the patient's neutral (normal) value there, so each finding shows only where the
taxonomy says it can be seen.

Colour views also fill the canvas's flow fields (velocity toward the transducer in Nyquist
units, turbulence) and the regurgitant-jet masks, and return their colour box.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from echosonar.simulate.cycle import Cycle
from echosonar.simulate.shapes import (
    BLOOD,
    MYO,
    PERICARDIUM,
    VALVE,
    Canvas,
    annulus_sector,
    ellipse,
    rect,
    to_frame,
)
from echosonar.simulate.spec import lvesd_from_ef
from echosonar.taxonomy import FINDING_BY_KEY

#: measurement keys each finding drives, for neutralising findings a view cannot show
_DRIVES: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": ("ef_pct",), "lv_enlargement": ("lvedd_cm",),
    "lv_hypertrophy": ("ivs_cm", "lvpw_cm"), "la_enlargement": ("la_ap_cm",),
    "ra_enlargement": ("ra_minor_cm",), "rv_enlargement": ("rv_basal_cm",),
    "aortic_stenosis": ("av_opening_cm",), "bicuspid_aortic_valve": ("av_cusps",),
    "mitral_valve_calcification": ("mv_calc_score",), "mitral_regurgitation": ("mr_jet_ratio",),
    "tricuspid_regurgitation": ("tr_jet_ratio",), "aortic_regurgitation": ("ar_jet_ratio",),
    "pericardial_effusion": ("pe_depth_cm",),
}


def visible_measurements(m: dict[str, Any], view: str, neutral: dict[str, float]) -> dict:
    """Measurements as rendered in ``view``: drivers of findings not assessable there take the
    patient's neutral value; LVESD is re-derived from the visible EF and LVEDD."""
    out = dict(m)
    for key, drivers in _DRIVES.items():
        if view not in FINDING_BY_KEY[key].views:
            for d in drivers:
                out[d] = neutral[d]
    out["lvesd_cm"] = lvesd_from_ef(out["lvedd_cm"], out["ef_pct"])
    return out


def _lv_state(m: dict, cyc: Cycle, pt: dict) -> dict[str, np.ndarray]:
    s = cyc.s
    k = min(m["ef_pct"], 70.0) / 65.0
    thick = 1.0 + 0.5 * k * (1.0 - s)
    lvedd = m["lvedd_cm"]
    L_ed = (4.2 + 0.8 * lvedd) * pt["lv_length_ratio"] / 1.6
    return {
        "D": m["lvesd_cm"] + (lvedd - m["lvesd_cm"]) * s,
        "t_sep": m["ivs_cm"] * thick, "t_lat": m["lvpw_cm"] * thick,
        "L": L_ed * (1.0 - 0.13 * k * (1.0 - s)), "L_ed": L_ed,
        "la": m["la_ap_cm"] * (0.86 + 0.14 * (1.0 - s)),
        "ra": m["ra_minor_cm"] * (0.86 + 0.14 * (1.0 - s)),
        "rv": m["rv_basal_cm"] * (0.8 + 0.2 * s),
    }


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a * (1 - w) + b * w


def _leaflet(hu, hv, closed_dir, open_dir, length, o):
    """Tip of a leaflet hinged at (hu, hv), rotating from ``closed_dir`` to ``open_dir``."""
    du = _mix(np.float32(closed_dir[0]), np.float32(open_dir[0]), o)
    dv = _mix(np.float32(closed_dir[1]), np.float32(open_dir[1]), o)
    n = np.hypot(du, dv) + 1e-6
    return hu + length * du / n, hv + length * dv / n


def _jet(cv: Canvas, u, v, origin, direction_deg, area, aspect, frame_ang, amp, speed, box):
    """A turbulent regurgitant jet: an ellipse starting at ``origin`` along ``direction_deg``
    (0 = +v, i.e. away from the apex in apical frames), with ``area`` (cm², ``[T]``)."""
    e = np.deg2rad(direction_deg)
    area = np.maximum(area * amp, 1e-4)
    a = np.sqrt(area / (np.pi * aspect))
    b = aspect * a
    du, dv = np.sin(e), np.cos(e)
    cu, cvv = origin[0] + 0.85 * a * du, origin[1] + 0.85 * a * dv
    m = ellipse(u, v, cu, cvv, b, a, ang=-np.rad2deg(e)) & cv.blood & box
    m &= (amp > 0.05).reshape(-1, 1)
    vel = cv.toward(du, dv, frame_ang) * speed
    cv.flow(m, vel, 0.85)
    return m


#: Standard imaging depth per view family (cm); sonographers change it only when the heart
#: would not fit, so chamber size stays visible as size in the image.
_BASE_DEPTH = {"A4C": 16.0, "A2C": 16.0, "A4C_COLOR": 16.0, "PLAX": 15.0, "PLAX_COLOR": 15.0,
               "PSAX_AV": 13.0}


def view_depth(view: str, m: dict, pt: dict, rng: np.random.Generator) -> float:
    """Imaging depth (cm): the view's standard depth with a little operator variation,
    deepened only when the anatomy would otherwise be cut off."""
    if view in ("A4C", "A2C", "A4C_COLOR"):
        L_ed = (4.2 + 0.8 * m["lvedd_cm"]) * pt["lv_length_ratio"] / 1.6
        need = 1.9 + 0.8 * m["lvpw_cm"] + L_ed + 1.3 * max(m["la_ap_cm"], m["ra_minor_cm"]) + 0.8
    elif view in ("PLAX", "PLAX_COLOR"):
        need = (2.2 + 0.75 * m["rv_basal_cm"] + m["ivs_cm"] + m["lvedd_cm"] + m["lvpw_cm"] +
                m["pe_depth_cm"] + 0.8)
    else:
        need = 8.5 + m["la_ap_cm"]
    base = _BASE_DEPTH[view] + rng.normal(0, 0.6)
    return float(np.clip(max(base, need), 10.0, 24.0))


# ----------------------------------------------------------------------------------------------
# Apical views: A4C (and its colour twin) and A2C
# ----------------------------------------------------------------------------------------------

def paint_apical(cv: Canvas, m: dict, pt: dict, cyc: Cycle, rng: np.random.Generator,
                 four: bool, color: bool, pe_visible: bool) -> dict[str, Any]:
    """A4C (``four``) or A2C. Heart frame (u, v): origin at the cardiac apex, u to the screen
    right, v toward the crux. The LV (with MV and LA) lives in its own frame (p, q) tilted so
    its base lies lower right of the apex; the RV (with TV and RA) in a frame (r, s) tilted
    the other way, so the septum runs from the apex down to the crux."""
    st = _lv_state(m, cyc, pt)
    D, t_sep, t_lat = st["D"], st["t_sep"], st["t_lat"]
    ang = pt["heart_angle_deg"] * 0.4 + rng.normal(0, 3)
    oz = rng.uniform(1.3, 1.9)
    # centre the ventricles under the probe: a dilated LV pushes the septum to the left
    centre = (m["lvedd_cm"] + m["lvpw_cm"] - m["rv_basal_cm"] - 0.4) / 2 if four else 0.0
    ox = rng.normal(-0.8 * centre, 0.3)
    u, v = to_frame(cv.x, cv.z, ox, oz, ang)
    cv.paint((cv.z < oz - 0.1)[None], 1.4)                       # chest wall
    cv.paint((np.abs(cv.z - oz * 0.45) < 0.12)[None], 4.0)       # fascia
    D_ed, L_ed = m["lvedd_cm"], st["L_ed"]
    t_ap = 0.8 * m["lvpw_cm"]
    bx = (m["ivs_cm"] / 2 + 0.45 * D_ed) if four else 0.0
    by = t_ap + L_ed
    beta = np.rad2deg(np.arctan2(bx - (0.3 if four else 0.0), L_ed)) + rng.normal(0, 2)
    L_axis = float(np.hypot(bx, L_ed))
    p, q = to_frame(u, v, bx, by, -beta)
    Lc = st["L"] * L_axis / L_ed
    q_b = -L_axis + Lc                                           # base (annulus) position
    ru, rz, q_c = D / 2 / 0.98, 0.85 * Lc, q_b - 0.15 * Lc
    pe = m["pe_depth_cm"] if pe_visible else 0.0
    if four:
        rv_ed = m["rv_basal_cm"]
        rbx, rby = -m["ivs_cm"] / 2 - rv_ed / 2, by - 0.7
        rax, ray = -0.5, t_ap + 0.25 * L_ed
        gamma = np.rad2deg(np.arctan2(rbx - rax, rby - ray))
        L_rv0 = float(np.hypot(rbx - rax, rby - ray))
        r_, s_ = to_frame(u, v, rbx, rby, -gamma)
        L_rv = L_rv0 * (0.9 + 0.1 * cyc.s)
        s_b = -L_rv0 + L_rv
        rv_ru, rv_rz, s_c = st["rv"] / 2 / 0.97, 0.88 * L_rv, s_b - 0.12 * L_rv
    # pericardium (+ effusion) around the ventricles, myocardium, then cavities
    for extra, val, lab in ((pe + 0.3, PERICARDIUM, None), (pe, BLOOD * 2, "PE")):
        if lab == "PE" and pe <= 0:
            continue
        cv.paint(ellipse(p, q, 0.0, q_c, ru + t_lat + extra, rz + t_ap + extra,
                         vmax=0.15 * Lc + 0.2), val, lab)
        if four:
            cv.paint(ellipse(r_, s_, 0.0, s_c, rv_ru + 0.4 + extra, rv_rz + 0.4 + extra,
                             vmax=0.12 * L_rv + 0.2), val, lab)
    cv.paint(ellipse(p, q, 0.0, q_c, ru + t_lat, rz + t_ap, vmax=0.15 * Lc + 0.3), MYO)
    if four:
        cv.paint(ellipse(r_, s_, 0.0, s_c, rv_ru + 0.4, rv_rz + 0.4, vmax=0.12 * L_rv + 0.3),
                 MYO)
    # the septum is straight: cavities stop at u = +-t_sep/2 (heart frame)
    sep_l = u[None] >= (t_sep / 2).reshape(-1, 1) if four else True
    sep_r = u[None] <= -(t_sep / 2).reshape(-1, 1)
    # atria below their valves, walls first, flat tops at the annulus
    la = st["la"]
    la_w, la_len = la * 1.05, la * 1.3
    p_la = (-0.45 * D_ed + la_w / 2) if four else 0.0
    q_la = q_b + la_len / 2 - 0.05
    cv.paint(ellipse(p, q, p_la, q_la, la_w / 2 + 0.3, la_len / 2 + 0.3), MYO * 0.8)
    if four:
        ra = st["ra"]
        ra_w, ra_len = ra, ra * 1.2
        r_ra, s_ra = 0.45 * rv_ed - ra_w / 2, s_b + ra_len / 2 - 0.05
        cv.paint(ellipse(r_, s_, r_ra, s_ra, ra_w / 2 + 0.3, ra_len / 2 + 0.3), MYO * 0.8)
        cv.paint(ellipse(r_, s_, r_ra, s_ra, ra_w / 2, ra_len / 2, vmin=-(s_ra - s_b) + 0.15),
                 BLOOD, "RA", blood=True)
        cv.paint(ellipse(r_, s_, 0.0, s_c, rv_ru, rv_rz, vmax=0.12 * L_rv) & sep_r, BLOOD, "RV",
                 blood=True)
    cv.paint(ellipse(p, q, p_la, q_la, la_w / 2, la_len / 2, vmin=-(q_la - q_b) + 0.15), BLOOD,
             "LA", blood=True)
    lv_cav = ellipse(p, q, 0.0, q_c, ru, rz, vmax=0.15 * Lc)
    if pt.get("apical_akinesis", 0.0) and m["ef_pct"] < 45:
        # ischaemic pattern: the apical third keeps its end-diastolic shape all cycle
        D0, L0 = m["lvedd_cm"], L_axis
        apical = ellipse(p, q, 0.0, -0.15 * L0, D0 / 2 / 0.98, 0.85 * L0, vmax=0.15 * L0)
        lv_cav = lv_cav | (apical & (q[None] < -0.62 * L0))
    cv.paint(lv_cav & sep_l, BLOOD, "LV", blood=True)
    # mitral valve: anterior (septal side) and posterior leaflets; the annulus opening joins
    # LV and LA and the leaflets separate them
    calc = m["mv_calc_score"]
    a_mv = 0.75 * D + 0.35
    mv_w = 0.16 + 0.3 * max(calc - 0.3, 0)
    mv_val = VALVE * (1 + 5 * max(calc - 0.3, 0))
    hA, hP = (-a_mv / 2, q_b), (a_mv / 2, q_b)
    cv.paint(rect(p, q, hA[0] + 0.1, q_b - 0.5, hP[0] - 0.1, q_b), BLOOD, "LV", blood=True)
    cv.paint(rect(p, q, hA[0] + 0.1, q_b, hP[0] - 0.1, q_b + 0.5), BLOOD, "LA", blood=True)
    o = cyc.mv_open
    tipA = _leaflet(*hA, (1.0, 0.25), (-0.25, -1.0), 0.52 * a_mv + 0.3, o)
    tipP = _leaflet(*hP, (-1.0, 0.25), (0.3, -1.0), 0.45 * a_mv, o)
    cv.paint(cv.segment(p, q, *hA, *tipA, mv_w) | cv.segment(p, q, *hP, *tipP, mv_w), mv_val, "MV")
    if calc >= 0.45:  # annular calcification: a bright lump at the posterior annulus
        cv.paint(ellipse(p, q, hP[0] + 0.1, hP[1] + 0.1, 0.25 + 0.3 * calc, 0.2 + 0.25 * calc),
                 mv_val * 2, "MV")
    out: dict[str, Any] = {"frame_angle": ang, "frame": (ox, oz)}
    lv_ang = ang - beta
    if four:
        a_tv = 0.7 * st["rv"] + 0.5
        hS, hF = (a_tv / 2, s_b), (-a_tv / 2, s_b)   # septal / free-wall (anterior) hinges
        cv.paint(rect(r_, s_, hF[0] + 0.1, s_b - 0.5, hS[0] - 0.1, s_b), BLOOD, "RV", blood=True)
        cv.paint(rect(r_, s_, hF[0] + 0.1, s_b, hS[0] - 0.1, s_b + 0.5), BLOOD, "RA", blood=True)
        ot = cyc.tv_open
        tipS = _leaflet(*hS, (-1.0, 0.2), (0.15, -1.0), 0.42 * a_tv, ot)
        tipF = _leaflet(*hF, (1.0, 0.2), (-0.35, -1.0), 0.58 * a_tv, ot)
        cv.paint(cv.segment(r_, s_, *hS, *tipS, 0.15) | cv.segment(r_, s_, *hF, *tipF, 0.15), VALVE,
                 "TV")
        rv_ang = ang - gamma
    if color:
        box = box_from_labels(cv, ("LA", "RA") if four else ("LA",), 3.0, 0.5, 0.06)
        out["color_box"] = box
        inside = cv_box_mask(cv, box)
        # diastolic inflow toward the apex (red), systolic flow toward the outflow (blue)
        inflow = ellipse(p, q, 0.0, q_b - 1.3, 0.32 * a_mv, 1.7) | \
            ellipse(p, q, 0.2, q_b + 0.9, 0.5 * a_mv, 1.1)
        cv.flow(inflow & cv.blood & inside,
                cv.toward(0.0, -1.0, lv_ang) * (0.95 * cyc.mv_open).reshape(-1, 1), 0.1)
        out_m = ellipse(p, q, -0.2 * D, q_b - 1.8, 0.3 * D, 1.6)
        cv.flow(out_m & cv.blood & inside,
                cv.toward(-0.3, 1.0, lv_ang) * (0.45 * (1 - cyc.s) * cyc.systole).reshape(-1, 1),
                0.05)
        if four:
            tin = ellipse(r_, s_, 0.0, s_b - 1.0, 0.3 * a_tv, 1.4)
            cv.flow(tin & cv.blood & inside,
                    cv.toward(0.0, -1.0, rv_ang) * (0.7 * cyc.tv_open).reshape(-1, 1), 0.1)
        amp = np.where(cyc.systole, np.sqrt(np.clip(np.sin(
            np.pi * (cyc.phase - 0.02) / (cyc.es_phase + 0.1)), 0, 1)), 0.0)
        mr = m["mr_jet_ratio"]
        if mr >= 0.04:
            la_area = np.pi * (la_w / 2) * (la_len / 2)
            j = _jet(cv, p, q, (0.05, q_b - 0.05), pt.get("mr_ecc_deg", 0.0), mr * la_area, 0.42,
                     lv_ang, amp, 2.6, inside)
            _pisa(cv, p, q, (0.05, q_b - 0.35), 0.15 + 0.5 * mr, lv_ang, amp)
            out["jet_MR_JET"] = j
        if four and m["tr_jet_ratio"] >= 0.04:
            tr = m["tr_jet_ratio"]
            ra_area = np.pi * (ra_w / 2) * (ra_len / 2)
            j = _jet(cv, r_, s_, (0.0, s_b), pt.get("tr_ecc_deg", 0.0), tr * ra_area, 0.45,
                     rv_ang, amp, 2.3, inside)
            out["jet_TR_JET"] = j
    return out


def box_from_labels(cv: Canvas, structs: tuple[str, ...], up_cm: float, down_cm: float,
                    margin_rad: float) -> tuple[float, float, float, float]:
    """Colour box ``(r0, r1, th0, th1)`` around where ``structs`` appear in any frame,
    extended ``up_cm`` toward the transducer and ``down_cm`` away."""
    from echosonar.taxonomy import STRUCTURE_INDEX

    ids = [STRUCTURE_INDEX[s] + 1 for s in structs]
    where = np.isin(cv.label, ids).any(axis=0)
    if not where.any():
        where = np.ones_like(where)
    r = np.hypot(cv.x, cv.z)[where]
    th = np.arctan2(cv.x, cv.z)[where]
    return (float(max(r.min() - up_cm, 0.5)), float(r.max() + down_cm),
            float(th.min() - margin_rad), float(th.max() + margin_rad))


def _pisa(cv: Canvas, u, v, centre, radius, ang, amp) -> None:
    """Flow convergence on the ventricular side of a regurgitant valve (aliasing shell)."""
    m = ellipse(u, v, centre[0], centre[1], radius, radius) & cv.blood
    m &= (amp > 0.1).reshape(-1, 1)
    cv.flow(m, cv.toward(0.0, 1.0, ang) * 1.3, 0.3)


def _polar_box(cv: Canvas, u, v, urange, vrange, ox, oz, ang) -> tuple[float, float, float, float]:
    """Colour box ``(r0, r1, th0, th1)`` (cm, radians) enclosing a frame-space rectangle."""
    a = np.deg2rad(ang)
    pts = []
    for uu in urange:
        for vv in vrange:
            uu_, vv_ = float(np.mean(uu)), float(np.mean(vv))
            pts.append((ox + uu_ * np.cos(a) - vv_ * np.sin(a), oz + uu_ * np.sin(a) +
                        vv_ * np.cos(a)))
    xs, zs = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    r = np.hypot(xs, zs)
    th = np.arctan2(xs, zs)
    return float(r.min()), float(r.max()), float(th.min()), float(th.max())


def cv_box_mask(cv: Canvas, box: tuple[float, float, float, float]) -> np.ndarray:
    r = np.hypot(cv.x, cv.z)
    th = np.arctan2(cv.x, cv.z)
    return ((r >= box[0]) & (r <= box[1]) & (th >= box[2]) & (th <= box[3]))[None]


# ----------------------------------------------------------------------------------------------
# Parasternal long axis (and its colour twin)
# ----------------------------------------------------------------------------------------------

def paint_plax(cv: Canvas, m: dict, pt: dict, cyc: Cycle, rng: np.random.Generator,
               color: bool, pe_visible: bool) -> dict[str, Any]:
    """PLAX: RV on top, LV in the middle running to the apex on the left, aortic root and valve
    on the right with the LA below it. Frame origin: top of the septum below the mitral
    annulus, u to the right (aorta), v down."""
    st = _lv_state(m, cyc, pt)
    D, t_sep, t_pw = st["D"], st["t_sep"], st["t_lat"]
    ang = -pt["heart_angle_deg"] + rng.normal(0, 3)
    d_rv = 0.75 * st["rv"]
    oz = rng.uniform(1.2, 1.7) + 0.45 + 0.75 * m["rv_basal_cm"]
    ox = rng.normal(-0.6, 0.35)
    u, v = to_frame(cv.x, cv.z, ox, oz, ang)
    d_rv0 = 0.75 * m["rv_basal_cm"]
    cv.paint((cv.z < oz - d_rv0 - 0.45)[None], 1.6)
    cv.paint((np.abs(cv.z - 0.5 * (oz - d_rv0)) < 0.12)[None], 4.0)
    root = pt["root_cm"]
    u_av = 1.2
    u_ann = u_av - 0.4
    r_top = 0.45 * t_sep
    r_bot = r_top + root
    v_endo = t_sep + D                  # posterior endocardium
    v_epi = v_endo + t_pw
    pe = m["pe_depth_cm"] if pe_visible else 0.0
    # RV (outflow) band under its free wall
    cv.paint(ellipse(u, v, -2.0, -d_rv / 2, 7.0, d_rv / 2 + 0.45), MYO)
    if pe >= 1.0:  # large effusions also show anteriorly
        cv.paint(ellipse(u, v, -2.0, -d_rv / 2 - 0.45 - 0.25 * pe, 7.0, 0.25 * pe, 0.0),
                 BLOOD * 2, "PE")
    cv.paint(ellipse(u, v, -2.0, -d_rv / 2, 6.6, d_rv / 2), BLOOD, "RV", blood=True)
    # pericardium and effusion behind the posterior wall; effusion stops at the AV groove
    cv.paint(rect(u, v, -12.0, v_epi + pe, u_av + 3.8, v_epi + pe + 0.4), PERICARDIUM)
    if pe > 0:
        cv.paint(rect(u, v, -12.0, v_epi, u_ann + 0.2, v_epi + pe), BLOOD * 2, "PE")
    # descending aorta behind the LA
    da_v = v_epi + pe + 1.5
    cv.paint(ellipse(u, v, u_ann + 1.6, da_v, 1.0, 0.9), MYO * 1.5)
    cv.paint(ellipse(u, v, u_ann + 1.6, da_v, 0.75, 0.65), BLOOD, blood=True)
    # LV myocardium (septum above, posterior wall below) with a tapering apex on the left
    cv.paint(rect(u, v, -4.0, 0.0, u_ann + 0.3, v_epi) |
             ellipse(u, v, -4.0, (0.0 + v_epi) / 2, 4.5, v_epi / 2, umax=0.0), MYO)
    # LA behind (below) the aortic root
    la = st["la"]
    la_c = (u_av + 0.4 + 0.3 * la, r_bot + 0.4 + la / 2)
    la_ru = 0.55 * la + 0.6
    cv.paint(ellipse(u, v, *la_c, la_ru + 0.3, la / 2 + 0.3), MYO * 0.9)
    cv.paint(ellipse(u, v, *la_c, la_ru, la / 2), BLOOD, "LA", blood=True)
    # aortic root: bright walls, dark lumen
    cv.paint(rect(u, v, u_av - 0.3, r_top - 0.35, 12.0, r_bot + 0.35), VALVE * 0.8)
    cv.paint(rect(u, v, u_av - 0.2, r_top, 12.0, r_bot), BLOOD, blood=True)
    # LV cavity and LVOT
    cv.paint(rect(u, v, -4.0, t_sep, u_ann, v_endo) |
             ellipse(u, v, -4.0, t_sep + D / 2, 3.9, D / 2, umax=0.0), BLOOD, "LV", blood=True)
    lvot_bot = np.minimum(r_bot - 0.1, v_endo - 0.3)
    cv.paint(rect(u, v, u_av - 1.7, t_sep, u_av - 0.15, lvot_bot), BLOOD, "LVOT", blood=True)
    # aortic valve cusps (right coronary above, non-coronary below)
    calc = max(0.0, 1.5 - m["av_opening_cm"]) / 1.0
    cw = 0.15 + 0.3 * calc
    cval = VALVE * (1 + 4 * calc)
    lc = root / 2 * 1.05
    opening = np.minimum(m["av_opening_cm"], root - 0.2)
    r_mid = (r_top + r_bot) / 2
    o = cyc.av_open
    dz = np.maximum(root / 2 - opening / 2 * o, 0.05)
    tip_du = np.where(o > 0.02, np.sqrt(np.maximum(lc * lc - dz * dz, 0.04)), -0.2)
    top_tip = (u_av + tip_du, r_top + dz * np.where(o > 0.02, 1.0, 0.0) +
               np.where(o > 0.02, 0.0, root / 2 - 0.05))
    bot_tip = (u_av + tip_du, r_bot - dz * np.where(o > 0.02, 1.0, 0.0) -
               np.where(o > 0.02, 0.0, root / 2 - 0.05))
    cv.paint(cv.segment(u, v, u_av, r_top, *top_tip, cw) |
             cv.segment(u, v, u_av, r_bot, *bot_tip, cw), cval, "AV")
    # mitral valve: anterior leaflet from the aortic root, posterior from the AV groove
    mcalc = m["mv_calc_score"]
    mv_w = 0.16 + 0.3 * max(mcalc - 0.3, 0)
    mv_val = VALVE * (1 + 5 * max(mcalc - 0.3, 0))
    hA = (u_av - 0.1, r_bot + 0.15)
    hP = (u_ann + 0.3, v_endo)
    span = np.hypot(hA[0] - hP[0], hA[1] - hP[1])
    om = cyc.mv_open
    tipA = _leaflet(*hA, (-0.45, 1.0), (-1.0, -0.75), 0.55 * span + 0.4, om)
    tipP = _leaflet(*hP, (-0.45, -1.0), (-1.0, 0.5), 0.45 * span, om)
    cv.paint(cv.segment(u, v, *hA, *tipA, mv_w) | cv.segment(u, v, *hP, *tipP, mv_w), mv_val, "MV")
    if mcalc >= 0.45:
        cv.paint(ellipse(u, v, hP[0] + 0.2, hP[1] + 0.15, 0.25 + 0.3 * mcalc, 0.2 + 0.2 * mcalc),
                 mv_val * 2, "MV")
    out: dict[str, Any] = {"frame_angle": ang, "frame": (ox, oz)}
    if color:
        box = _polar_box(cv, u, v, (u_av - 4.2, u_av + 3.0), (t_sep * 0.8, la_c[1] + la / 2 + 0.3),
                         ox, oz, ang)
        out["color_box"] = box
        inside = cv_box_mask(cv, box)
        sysw = (cyc.av_open * 0.9).reshape(-1, 1)
        lvot = rect(u, v, u_av - 2.2, t_sep, u_av - 0.1, lvot_bot) & cv.blood & inside
        cv.flow(lvot, cv.toward(1.0, -0.25, ang) * sysw, 0.1)
        aorta = rect(u, v, u_av, r_top, 12.0, r_bot) & cv.blood & inside
        cv.flow(aorta, cv.toward(1.0, -0.05, ang) * sysw, 0.1)
        c_mv = ((hA[0] + hP[0]) / 2 - 0.3, (hA[1] + hP[1]) / 2)
        inflow = ellipse(u, v, c_mv[0] - 1.3, c_mv[1] - 0.5, 1.8, 0.7, 35.0) & cv.blood & inside
        cv.flow(inflow, cv.toward(-0.8, -0.6, ang) * (0.9 * cyc.mv_open).reshape(-1, 1), 0.1)
        amp = np.where(cyc.systole, np.sqrt(np.clip(np.sin(
            np.pi * (cyc.phase - 0.02) / (cyc.es_phase + 0.1)), 0, 1)), 0.0)
        mr = m["mr_jet_ratio"]
        if mr >= 0.04:
            la_area = np.pi * la_ru * (la / 2)
            d = 40.0 + pt.get("mr_ecc_deg", 0.0)   # down and to the right, into the LA
            out["jet_MR_JET"] = _jet(cv, u, v, (c_mv[0] + 0.3, c_mv[1]), d, mr * la_area, 0.42,
                                     ang, amp, 2.6, inside)
        ar = m["ar_jet_ratio"]
        if ar >= 0.04:
            lvot_w = np.mean(lvot_bot - t_sep)
            amp_ar = np.where(cyc.ar_phase, 1.0, 0.0) * (0.75 + 0.25 * (1 - cyc.s))
            e = np.deg2rad(-105.0)  # leftward (toward the apex) and slightly downward
            length = 1.2 + 4.0 * ar
            half_w = max(ar * lvot_w / 2 / 0.6, 0.12)
            area = np.pi * length * half_w
            a_len = np.sqrt(area / (np.pi * (half_w / length)))
            origin = (u_av - 0.15, r_mid + 0.1)
            cu, cvv = origin[0] + 0.8 * a_len * np.sin(e), origin[1] + 0.8 * a_len * np.cos(e)
            jm = ellipse(u, v, cu, cvv, half_w, a_len, ang=-np.rad2deg(e)) & cv.blood & inside
            jm &= (amp_ar > 0.05).reshape(-1, 1)
            cv.flow(jm, cv.toward(np.sin(e), np.cos(e), ang) * 2.4, 0.85)
            out["jet_AR_JET"] = jm
    return out


# ----------------------------------------------------------------------------------------------
# Parasternal short axis at aortic-valve level
# ----------------------------------------------------------------------------------------------

def paint_psax_av(cv: Canvas, m: dict, pt: dict, cyc: Cycle,
                  rng: np.random.Generator) -> dict[str, Any]:
    """PSAX-AV: cusps in the centre, RV outflow curving over the top, LA below, RA lower left,
    pulmonary valve to the right."""
    r_ao = pt["root_cm"] / 2
    w_rv = 0.55 * m["rv_basal_cm"] + 0.5
    oz = rng.uniform(1.2, 1.6) + 0.4 + w_rv + 0.5 + r_ao
    ox = rng.normal(0.0, 0.3)
    ang = rng.normal(0, 6)
    u, v = to_frame(cv.x, cv.z, ox, oz, ang)
    cv.paint((cv.z < oz - r_ao - 0.9 - w_rv)[None], 1.6)
    # heart tissue block around the base
    cv.paint(ellipse(u, v, 0.0, 0.6, r_ao + w_rv + 1.4, r_ao + w_rv + 1.2), MYO * 0.7)
    # RV outflow over the top: free wall then cavity, pulmonary artery on the right
    rin, rout = r_ao + 0.45, r_ao + 0.45 + w_rv
    cv.paint(annulus_sector(u, v, 0.0, 0.0, rin - 0.05, rout + 0.45, 175.0, 360.0), MYO)
    cv.paint(annulus_sector(u, v, 0.0, 0.0, rin, rout, 182.0, 352.0), BLOOD, "RV", blood=True)
    pa = (rout * 0.85 + 0.8, 0.7)
    cv.paint(ellipse(u, v, *pa, 1.2, 0.9, 35.0), BLOOD, blood=True)
    pv_open = np.clip(cyc.av_open, 0, 1)
    pv_h = (rout * 0.9, -0.25)
    cv.paint(cv.segment(u, v, pv_h[0] - 0.6, pv_h[1] - 0.4, pv_h[0] - 0.2 + 0.5 * pv_open,
                     pv_h[1] + 0.1 - 0.3 * pv_open, 0.14) |
             cv.segment(u, v, pv_h[0] + 0.5, pv_h[1] + 0.5, pv_h[0] - 0.1 + 0.4 * pv_open,
                     pv_h[1] + 0.1 + 0.3 * pv_open, 0.14), VALVE)
    # atria
    la = m["la_ap_cm"] * (0.86 + 0.14 * (1.0 - cyc.s))
    la_c = (0.4, r_ao + 0.5 + la / 2)
    cv.paint(ellipse(u, v, *la_c, 0.6 * la + 0.8 + 0.3, la / 2 + 0.3), MYO * 0.8)
    cv.paint(ellipse(u, v, *la_c, 0.6 * la + 0.8, la / 2), BLOOD, "LA", blood=True)
    ra = m["ra_minor_cm"] * (0.86 + 0.14 * (1.0 - cyc.s))
    ra_c = (-r_ao - 0.55 - ra / 2 * 0.9, 0.7 + 0.2 * ra)
    cv.paint(ellipse(u, v, *ra_c, ra / 2 * 0.9, ra / 2), BLOOD, "RA", blood=True)
    # tricuspid leaflets between RA and RV inflow (not a labelled structure in this view)
    tv = (ra_c[0] + 0.2, ra_c[1] - ra / 2 - 0.05)
    ot = cyc.tv_open
    cv.paint(cv.segment(u, v, tv[0] - 0.7, tv[1], tv[0] - 0.1, tv[1] - 0.1 - 0.6 * ot, 0.14) |
             cv.segment(u, v, tv[0] + 0.6, tv[1] - 0.1, tv[0] + 0.1, tv[1] - 0.15 - 0.5 * ot, 0.14),
             VALVE)
    # posterior pericardium behind the LA
    cv.paint(annulus_sector(u, v, la_c[0], la_c[1] - 0.5, la / 2 + 1.0, la / 2 + 1.4, 30.0,
                            150.0), PERICARDIUM)
    # aortic valve: bright annulus ring, dark lumen, cusps
    cv.paint(ellipse(u, v, 0.0, 0.0, r_ao + 0.3, r_ao + 0.3), VALVE * 0.9, "AV")
    cv.paint(ellipse(u, v, 0.0, 0.0, r_ao, r_ao), BLOOD, "AV", blood=True)
    calc = max(0.0, 1.5 - m["av_opening_cm"])
    cw = 0.15 + 0.3 * calc
    cval = VALVE * (1.2 + 4 * calc)
    o = cyc.av_open.reshape(-1, 1)
    rot = pt.get("av_rot_deg", 0.0)
    if int(m["av_cusps"]) == 2:
        # one coaptation line closed; a "fish-mouth" ellipse open
        d = o * min(0.5 * m["av_opening_cm"], 0.8 * r_ao)
        a0 = np.deg2rad(rot + 10.0)
        t = np.linspace(0, np.pi, 7)
        for sign in (-1, 1):
            pts = []
            for tt in t:
                pu = r_ao * np.cos(tt)
                pv = sign * d[:, 0] * np.sin(tt)
                pts.append((pu * np.cos(a0) - pv * np.sin(a0), pu * np.sin(a0) + pv * np.cos(a0)))
            cv.paint(cv.polyline(u, v, pts, cw), cval, "AV")
    else:
        d = o[:, 0] * min(0.42 * m["av_opening_cm"], 0.62 * r_ao)
        comm = [np.deg2rad(rot + 90.0 + 120.0 * k) for k in range(3)]
        for k in range(3):
            c0, c1 = comm[k], comm[(k + 1) % 3]
            mid = c0 + np.deg2rad(60.0)
            p0 = (r_ao * np.cos(c0), r_ao * np.sin(c0))
            p1 = (r_ao * np.cos(c1), r_ao * np.sin(c1))
            pm = (d * np.cos(mid), d * np.sin(mid))
            cv.paint(cv.polyline(u, v, [p0, pm, p1], cw), cval, "AV")
    return {"frame_angle": ang, "frame": (ox, oz)}


def paint_view(view: str, cv: Canvas, m: dict, pt: dict, cyc: Cycle,
               rng: np.random.Generator) -> dict[str, Any]:
    """Paint ``view`` with view-visible measurements ``m``. Returns ``frame_angle`` and, for
    colour views, ``color_box`` (r0, r1, th0, th1) and ``jet_<STRUCT>`` masks."""
    pe_visible = view in FINDING_BY_KEY["pericardial_effusion"].views
    if view in ("A4C", "A4C_COLOR"):
        return paint_apical(cv, m, pt, cyc, rng, True, view == "A4C_COLOR", pe_visible)
    if view == "A2C":
        return paint_apical(cv, m, pt, cyc, rng, False, False, pe_visible)
    if view in ("PLAX", "PLAX_COLOR"):
        return paint_plax(cv, m, pt, cyc, rng, view == "PLAX_COLOR", pe_visible)
    if view == "PSAX_AV":
        return paint_psax_av(cv, m, pt, cyc, rng)
    raise ValueError(f"cannot render view {view!r}")
