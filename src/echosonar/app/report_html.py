"""``report.html``: one self-contained page a clinician reads (inline CSS/JS, PNG data URIs).

Content, top to bottom: the research-use notice, the OOD guard's verdict when it withholds the
findings (images unlike the training data, or no standard cardiac view), warnings, the sectioned
report beside the findings table, then one row per view — end-diastole and end-systole keyframes
with the detected structures drawn, the clip's OOD distance and level, the view's reasoning
sentence with each cited structure as a chip that lights up the cited box on the image (hover,
focus or click), and the view's measurements — and finally the model and timing details.
The page reads only the result dict (``result.json``) and the keyframes; it contains no file
names and no identifiers other than the study key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from importlib import resources
from typing import Any

import numpy as np

from echosonar.app.keyframes import data_uri, draw_keyframe, frame_to_rgb, structure_color
from echosonar.taxonomy import (
    FINDING_BY_KEY,
    MEASUREMENTS,
    STRUCTURE_NAMES,
    VIEW_NAMES,
    VIEWS,
)

RUO = "Research use only — not for diagnosis."
RUO_DETAIL = ("Generated automatically by a research model; every statement must be checked "
              "by a qualified clinician against the images.")
#: keyframes[clip_index] = {"ed": frame, "es": frame}; a frame is float [C, H, W] in [0, 1]
#: or uint8 [H, W, 3].
Keyframes = Mapping[int, Mapping[str, np.ndarray]]

_CITE_RE = re.compile(r"\b([A-Z][A-Z_]*) \((\d{1,2}),(\d{1,2}),(\d{1,2}),(\d{1,2})\)")
_KEYWORDS = ("structures", "evidence:", "findings:", "implication:", "not acquired;",
             "not assessable:")


def _asset(name: str) -> str:
    return resources.files("echosonar.app").joinpath("static", name).read_text("utf-8")


def _png(frame: np.ndarray, boxes: list[tuple[str, list[float]]]) -> str:
    rgb = frame if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[-1] == 3 \
        else frame_to_rgb(frame)
    return data_uri(draw_keyframe(rgb, boxes))


def _sw(name: str) -> str:
    return f'<span class="sw" style="background:{structure_color(name)}"></span>'


def _fmt(v: Any, nd: int = 2) -> str:
    return "—" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else escape(str(v))


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------

def _header(r: dict[str, Any]) -> str:
    m = r["model"]
    return (
        '<header class="top"><div class="brand">EchoSonar<span>Echocardiography study report'
        '</span></div><div class="meta">Study key <code>' + escape(r["study_key"]) + "</code>"
        f" · generated {escape(r['created_utc'])} · model <code>{escape(m['bundle'])}</code>"
        f" v{m['bundle_version']}</div></header>"
        f'<div class="ruo" role="note" id="ruo">&#9888; {RUO}<span>{RUO_DETAIL}</span></div>')


def _warnings(r: dict[str, Any]) -> str:
    if not r["warnings"]:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in r["warnings"])
    return (f'<section class="warnings" id="warnings"><strong>{len(r["warnings"])} warning'
            f'{"s" if len(r["warnings"]) != 1 else ""}</strong><ul>{items}</ul></section>')


def _guard(r: dict[str, Any]) -> str:
    """The OOD guard's verdict, above everything else when findings are withheld."""
    g = r.get("ood")
    if not g or not g.get("withheld"):
        return ""
    head = ("Not assessable" if r.get("status") == "not_assessable"
            else "Findings withheld: these images are unlike the training data")
    return (f'<section class="warnings ood" id="ood" role="alert"><strong>&#9888; {head}'
            f'</strong><p>{escape(g.get("reason") or "")}. EchoSonar was trained on simulated '
            "echocardiograms only; it reports no finding on images it does not recognise."
            "</p></section>")


def _ood_line(c: dict[str, Any]) -> str:
    o = c.get("ood")
    if not o or o.get("score") is None:
        return ""
    cls = {"in": "ok", "unusual": "warn", "out": "bad"}.get(o.get("level") or "", "")
    text = (f'OOD distance {o["score"]:.2f} (warn at {o["warn_at"]:.2f}, reject at '
            f'{o["reject_at"]:.2f}): {o["level"]}')
    if o.get("level") == "out":
        text += f"; classifier said {o.get('classifier_view')}, not analysed"
    return f'<p class="oodline {cls}" data-ood="{escape(o.get("level") or "")}">{escape(text)}</p>'


def _report(r: dict[str, Any]) -> str:
    rows = []
    for s in r["report"]["sections"]:
        cls = ' class="concl"' if s["key"] == "conclusion" else ""
        rows.append(f'<dt{cls}>{escape(s["title"])}</dt><dd{cls} data-section="{s["key"]}">'
                    f'{escape(s["text"]) or "<em>not reported</em>"}</dd>')
    bad = ""
    if not r["reasoning"]["well_formed"]:
        bad = ('<p class="malformed">The model output did not follow the expected format; '
               "sections may be missing. See the raw output below.</p>")
    said = ", ".join(FINDING_BY_KEY[k].name for k in r["answer_findings"]) or "none stated"
    summary = f'<p class="summary">Findings stated by the model: <b>{escape(said)}</b></p>'
    return (f'<section class="card" id="report"><h2>Report</h2>{bad}{summary}'
            f'<dl class="report">{"".join(rows)}</dl></section>')


def _findings(r: dict[str, Any]) -> str:
    def order(f: dict[str, Any]) -> tuple:
        return (not f["assessable"], not f["positive"], -(f["score"] or 0.0))

    rows = []
    withheld = bool((r.get("ood") or {}).get("withheld"))
    for f in sorted(r["findings"], key=order):
        score, thr = f["score"], f["threshold"]
        cls = "na" if not f["assessable"] else "positive" if f["positive"] else ""
        if not f["assessable"]:
            call = '<span class="call na" title="no acquired view shows it">Not assessable</span>'
        elif withheld:
            call = ('<span class="call na" title="the images are unlike the training data (see '
                    'the banner above)">Withheld</span>')
        elif f["positive"] is None:
            call = '<span class="call na">No score</span>'
        elif f["positive"]:
            call = '<span class="call pos">Positive</span>'
        else:
            call = '<span class="call neg">Negative</span>'
        bar = "" if score is None else (
            f'<span class="bar" title="score {score:.2f}, threshold {thr:.2f}"><i style="width:'
            f'{100 * min(1.0, max(0.0, score)):.0f}%"></i><b style="left:{100 * thr:.0f}%"></b>'
            "</span>")
        said = '<span class="tick" title="stated in the generated answer">&#10003;</span>' \
            if f["in_answer"] else ""
        if f["assessable"] and f["positive"] is not None and bool(f["positive"]) != f["in_answer"]:
            said += '<span class="disagree" title="classifier score and generated answer ' \
                    'disagree">&#9888; differs</span>'
        rows.append(
            f'<tr class="{cls}" data-finding="{f["key"]}"><td>{escape(f["name"])}</td>'
            f'<td class="num">{bar}{_fmt(score)}</td><td class="num">{thr:.2f}</td>'
            f"<td>{call}</td><td>{said}</td></tr>")
    return ('<section class="card" id="findings"><h2>Findings</h2><table><thead><tr>'
            "<th>Finding</th><th>Score</th><th>Threshold</th><th>Call</th><th>In text</th>"
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _sentence(view: str, line: str) -> str:
    """A reasoning line with its citations turned into chips linked to the view's boxes."""
    out, pos = [], 0
    for m in _CITE_RE.finditer(line):
        out.append(_emph(escape(line[pos:m.start()])))
        s = m.group(1)
        coords = ",".join(m.groups()[1:])
        out.append(
            f'<a class="cite" href="#view-{view}" data-view="{view}" data-s="{escape(s)}" '
            f'style="border-color:{structure_color(s)}" title="{escape(STRUCTURE_NAMES.get(s, s))}'
            f' at ({coords}) in {view}">{_sw(s)}{escape(s)}<small>({coords})</small></a>')
        pos = m.end()
    out.append(_emph(escape(line[pos:])))
    return f'<p class="sentence" data-view="{view}">{"".join(out)}</p>'


def _emph(text: str) -> str:
    for k in _KEYWORDS:
        text = text.replace(k, f'<span class="k">{k}</span>')
    return text


def _clip_figures(c: dict[str, Any], kf: Mapping[str, np.ndarray] | None,
                  cited: dict[str, list[float]]) -> str:
    figs = []
    for phase, label, idx_key, box_key in (("ed", "End-diastole", "ed_index", "box_ed"),
                                           ("es", "End-systole", "es_index", "box_es")):
        boxes = [(s["name"], s[box_key]) for s in c["structures"] if s["present"] and s[box_key]]
        frame = None if kf is None else kf.get(phase)
        if frame is None:
            inner = '<div class="noimg">keyframe not available</div>'
        else:
            overlay = ""
            if phase == "ed":  # citations are end-diastolic boxes
                rects = "".join(
                    f'<rect data-view="{c["view"]}" data-s="{escape(s)}" x="{b[0] * 100:.1f}" '
                    f'y="{b[1] * 100:.1f}" width="{(b[2] - b[0]) * 100:.1f}" '
                    f'height="{(b[3] - b[1]) * 100:.1f}" stroke="{structure_color(s)}"/>'
                    for s, b in cited.items())
                overlay = (f'<svg viewBox="0 0 100 100" preserveAspectRatio="none" '
                           f'aria-hidden="true">{rects}</svg>')
            inner = (f'<img alt="{c["view"]} {label.lower()} with detected structures" '
                     f'src="{_png(frame, boxes)}">{overlay}')
        est = " (estimated)" if c["keyframes_estimated"] else ""
        figs.append(f'<figure><div class="kf">{inner}</div><figcaption>{label}, frame '
                    f'{c[idx_key] + 1}/{c["n_frames"]}{est}</figcaption></figure>')
    legend = "".join(f'{_sw(s["name"])}{escape(s["name"])} {s["score"]:.2f}'
                     for s in c["structures"] if s["present"])
    return (f'<div><div class="frames">{"".join(figs)}</div><div class="legend">Detected:'
            f'{legend or " none"}</div></div>')


def _measurements(c: dict[str, Any]) -> str:
    if not c["measurements"]:
        return ""
    rows = "".join(
        f'<tr><td>{escape(MEASUREMENTS.get(k, k).split(",")[0])}</td><td class="num">'
        f"{_fmt(v)}{' cm' if k.endswith('_cm') else ' %' if k.endswith('_pct') else ''}</td></tr>"
        for k, v in c["measurements"].items())
    return f'<table class="meas" aria-label="measurements">{rows}</table>'


def _views(r: dict[str, Any], keyframes: Keyframes) -> str:
    reasoning = {v["view"]: v for v in r["reasoning"]["views"]}
    rows, seen = [], set()
    rank = {v: i for i, v in enumerate(VIEWS)}
    for c in sorted(r["clips"], key=lambda c: (rank.get(c["view"], len(VIEWS)), c["index"])):
        view = c["view"]
        anchor = f'id="view-{view}"' if view not in seen else f'id="clip-{c["index"]}"'
        seen.add(view)
        rv = reasoning.get(view)
        text = _sentence(view, rv["text"]) if rv else (
            '<p class="notacq">No reasoning about this view in the model output.</p>')
        rows.append(
            f'<div class="view" {anchor} data-view="{view}"><div>{_clip_figures(c, keyframes.get(c["index"]), rv["structures"] if rv else {})}</div>'  # noqa: E501
            f'<div><div class="head"><span class="badge">{view}</span><h3>'
            f'{escape(VIEW_NAMES.get(view, view))}</h3><span class="conf">{escape(c["label"])}'
            f' · view confidence {c["view_conf"]:.2f} ({c["view_source"]})</span></div>'
            f"{_ood_line(c)}{text}{_measurements(c)}</div></div>")
    for view in VIEWS:  # views the model reasoned about but that were not acquired
        if view in seen:
            continue
        rv = reasoning.get(view)
        body = _sentence(view, rv["text"]) if rv else ""
        rows.append(f'<div class="view missing" id="view-{view}" data-view="{view}"><div>'
                    f'<div class="head"><span class="badge missing">{view}</span><h3>'
                    f'{escape(VIEW_NAMES[view])}</h3><span class="conf">not acquired</span></div>'
                    f"{body}</div></div>")
    return f'<section class="card" id="views"><h2>Views and reasoning</h2>{"".join(rows)}</section>'


def _footer(r: dict[str, Any]) -> str:
    t = r["timing_s"]
    timing = "".join(f'<tr><td>{k}</td><td class="num">{t[k]:.2f} s</td></tr>' for k in t)
    comps = "".join(f"<tr><td>{escape(n)}</td><td><code>{escape(c['kind'])}</code></td><td>"
                    f"<code>{escape((c['sha256'] or '—')[:12])}</code></td></tr>"
                    for n, c in r["model"]["components"].items())
    errs = "".join(f"<li>{escape(e)}</li>" for e in r["reasoning"]["errors"])
    peak = r["peak_memory_mb"]
    return (
        '<section class="card"><h2>Technical details</h2><footer><div class="grid2">'
        f"<div><table>{comps}</table><p>echosonar {escape(r['model']['echosonar_version'])}, "
        f"thresholds from {r['model']['thresholds']}; peak memory "
        f"{'—' if peak is None else f'{peak:.0f} MiB'}.</p></div>"
        f"<div><table>{timing}</table></div></div>"
        + (f'<p class="malformed">Format problems in the model output:</p><ul>{errs}</ul>'
           if errs else "")
        + '<details><summary>Raw model output</summary><pre class="raw">'
        + escape(r["generation"]) + f"</pre></details><p>{RUO} {RUO_DETAIL}</p></footer></section>")


def render_report(result: dict[str, Any], keyframes: Keyframes | None = None) -> str:
    """The full HTML page for ``result`` (a valid result dict, see :mod:`echosonar.app.result`)
    with ``keyframes[clip_index] = {"ed": frame, "es": frame}``."""
    title = f"EchoSonar report · {result['study_key']}"
    labels = ", ".join(FINDING_BY_KEY[k].name for k in result["answer_findings"]) or "—"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{escape(title)}</title>'
        f'<meta name="description" content="{escape(labels)}">'
        f"<style>{_asset('report.css')}</style></head><body>"
        f'{_header(result)}<div class="wrap">{_guard(result)}{_warnings(result)}'
        f'<div class="grid2 gridwrap">{_report(result)}{_findings(result)}</div>'
        f"{_views(result, keyframes or {})}{_footer(result)}</div>"
        f"<script>{_asset('report.js')}</script></body></html>")
