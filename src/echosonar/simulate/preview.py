"""Contact sheet of one study: every acquired view at ED and ES with ground-truth boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echosonar.config.sim import SimConfig
from echosonar.simulate.presets import resolve
from echosonar.simulate.spec import spec_for_index
from echosonar.simulate.writer import render_study
from echosonar.taxonomy import FINDINGS, STRUCTURES

_COLORS = {
    "LV": (255, 80, 80), "LA": (80, 160, 255), "RA": (80, 255, 160), "RV": (255, 200, 60),
    "MV": (255, 80, 255), "TV": (200, 120, 255), "LVOT": (255, 140, 40), "AV": (60, 255, 255),
    "PE": (255, 255, 140), "MR_JET": (255, 255, 255), "TR_JET": (180, 255, 80),
    "AR_JET": (255, 160, 200),
}
assert set(_COLORS) == set(STRUCTURES)


def contact_sheet(cfg: SimConfig, index: int, out_png: str | Path, scale: int = 3,
                  extra_frames: bool = True) -> Path:
    """Render study ``index`` of the set defined by ``cfg`` and save a PNG contact sheet.

    Rows are views; columns are ED and ES (plus a mid-diastole frame when ``extra_frames``,
    where diastolic flow and AR jets show), each with its ground-truth boxes.
    """
    from PIL import Image, ImageDraw

    cfg = resolve(cfg)
    spec = spec_for_index(cfg, index)
    clips = render_study(spec, cfg)
    tile = cfg.image_size * scale
    ncol = 3 if extra_frames else 2
    head = 40
    sheet = Image.new("RGB", (ncol * tile + 90, head + len(clips) * tile), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    pos = [f"{f.name} ({f.severity(spec.measurements)})" for f in FINDINGS if spec.labels[f.key]]
    draw.text((6, 4), f"study {spec.key}  split={spec.split}  preset={cfg.preset}", fill="white")
    draw.text((6, 20), "findings: " + ("; ".join(pos) or "healthy"), fill=(255, 220, 120))
    for r, (view, frames, meta) in enumerate(clips):
        T = frames.shape[0]
        es = meta["es_frames"][0]
        cols = [("ED", meta["ed_frames"][0]), ("ES", es)]
        if extra_frames:
            cols.append(("mid-dia", int(round((es + T) / 2)) % T))
        y = head + r * tile
        draw.text((ncol * tile + 6, y + 6), view, fill="white")
        for c, (name, t) in enumerate(cols):
            img = frames[t]
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, -1)
            im = Image.fromarray(img).resize((tile, tile), Image.NEAREST)
            d = ImageDraw.Draw(im)
            for s, b in meta["boxes"][t].items():
                col = _COLORS[s]
                d.rectangle([b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale],
                            outline=col, width=1)
                d.text((b[0] * scale + 2, b[1] * scale + 1), s, fill=col)
            d.text((tile - 70, tile - 14), f"{name} f{t}", fill=(200, 200, 200))
            sheet.paste(im, (c * tile, y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
