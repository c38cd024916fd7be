"""Ultrasound-specific domain randomisation, shared by the view classifier and the detector.

Every model EchoSonar ships is trained on EchoSim alone; :func:`us_augment` randomises what a
real scanner, preset and patient change and EchoSim keeps fixed (depth and sector width, reject
level and greyscale map, depth attenuation and TGC, near-field haze, lateral dropout, speckle,
cavity noise, blur, burned-in marks). Its only geometric step is a zoom about the apex (the top
centre of the frame), which :func:`apex_zoom_boxes` applies to boxes, so the detector's targets
follow the image (``us_augment(..., geometry=True)`` returns the per-clip zoom).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: share of clips that :func:`us_augment` leaves as simulated (the rest get its randomisation)
CLEAN_SHARE = 0.3


def _smooth_noise(shape: tuple[int, ...], size: int, cells: int,
                  g: torch.Generator) -> torch.Tensor:
    """Uniform noise on a ``cells x cells`` grid, bilinearly upsampled to ``size x size``."""
    n = torch.rand(*shape, cells, cells, generator=g)
    return F.interpolate(n.flatten(0, -3).unsqueeze(1), size=(size, size), mode="bilinear",
                         align_corners=False).view(*shape, size, size)


def sector_mask(x: torch.Tensor, k: int = 9) -> torch.Tensor:
    """``[B, 1, 1, S, S]`` float: the imaged area of clips ``x [B, F, C, S, S]`` (any lit pixel
    over the clip), closed with a ``k x k`` kernel so that dark cavities count as inside."""
    lit = (x.amax(dim=(1, 2)) > 0.02).float().unsqueeze(1)  # B,1,S,S
    closed = F.max_pool2d(lit, k, 1, k // 2)
    closed = 1.0 - F.max_pool2d(1.0 - closed, k, 1, k // 2)
    return torch.maximum(lit, closed).unsqueeze(1)


def us_augment(x: torch.Tensor, g: torch.Generator, p: float = 1.0, geometry: bool = False,
               depth_zoom: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Ultrasound-specific domain randomisation of a batch ``[B, F, 3, S, S]`` in [0, 1].

    What a real scanner, preset and patient change and EchoSim keeps fixed, each applied to a
    clip with a probability scaled by ``p``: a deeper or shallower sector (zoom out / in about
    the apex at the top centre, so the heart fills less or more of the frame) and a wider or
    narrower sector; the reject level and greyscale map (a low-echo threshold and a contrast
    curve: real myocardium is medium grey on a dark background, EchoSim's tissue is bright);
    depth attenuation with an uneven time-gain compensation curve; near-field haze (bright
    clutter under the probe); lateral dropout (a darker wedge of beams); a smooth
    tissue-brightness field; multiplicative speckle that decorrelates between frames; noise
    in the cavities; blur; and burned-in bright marks (depth ticks, text specks).
    :data:`CLEAN_SHARE` of the clips are left as simulated. The result is
    renormalised to its 99th percentile, as :func:`~echosonar.ingest.view_model.clip_input`
    does at inference. Colour clips get the same treatment (the colour survives).

    ``depth_zoom=False`` leaves out the zoom about the apex (the sector-width stretch stays),
    for callers whose own augmentation already scales the image. With ``geometry``, returns
    ``(x, zoom)``: ``zoom [B, 2]`` the lateral and axial zoom about
    the apex of each clip (1, 1 for clips left as simulated); :func:`apex_zoom_boxes` maps boxes
    with it. The random draws are the same either way.
    """
    if p <= 0:
        return (x, torch.ones(x.shape[0], 2)) if geometry else x
    b, f, c, s, _ = x.shape
    u = torch.rand(b, 24, generator=g)
    on = lambda k, q: (u[:, k] < q * p).float().view(b, 1, 1, 1, 1)  # noqa: E731
    keep = (u[:, 23] < CLEAN_SHARE).view(b, 1, 1, 1, 1)  # these clips stay as simulated
    orig = x
    yy = torch.linspace(0, 1, s).view(1, 1, 1, s, 1)
    xx = torch.linspace(-1, 1, s).view(1, 1, 1, 1, s)
    # -- geometry: zoom about the apex (top centre), sector width ----------------------------
    z = torch.where(u[:, 0] < 0.55 * p, 0.5 + 0.5 * u[:, 1],           # deeper sector: 0.5-1
                    torch.where(u[:, 0] > 1 - 0.15 * p, 1.0 + 0.3 * u[:, 1], torch.ones(b)))
    if not depth_zoom:  # the caller scales the image itself (the detector's own zoom)
        z = torch.ones(b)
    zx = z * torch.exp((u[:, 2] - 0.5) * 0.5 * min(p, 1.0))            # width 0.78-1.28x
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = 1 / zx
    theta[:, 1, 1] = 1 / z
    theta[:, 1, 2] = -(1 - 1 / z)                                      # keep the top row fixed
    grid = F.affine_grid(theta, (b, f * c, s, s), align_corners=False)
    x = F.grid_sample(x.reshape(b, f * c, s, s), grid, align_corners=False).view(b, f, c, s, s)
    mask = sector_mask(x)
    # -- tissue: brightness field, reject level + greyscale map ------------------------------
    field = 0.5 + 0.8 * _smooth_noise((b, 1, 1), s, 4, g)
    x = x * (1 + on(3, 0.5) * (field - 1))
    t = (0.1 + 0.25 * u[:, 4]).view(b, 1, 1, 1, 1) * on(5, 0.6)
    x = ((x - t) / (1 - t)).clamp(0, 1)
    gam = torch.exp((u[:, 6] - 0.4) * 1.2).view(b, 1, 1, 1, 1)
    x = x ** (1 + on(7, 0.5) * (gam - 1))
    # -- depth: attenuation and a wavy TGC curve ---------------------------------------------
    att = torch.exp(-(2.0 * u[:, 8]).view(b, 1, 1, 1, 1) * yy)
    tgc = F.interpolate(0.6 + 0.8 * torch.rand(b, 1, 5, generator=g), size=s, mode="linear",
                        align_corners=True).view(b, 1, 1, s, 1)
    x = x * (1 + on(9, 0.6) * (att * tgc - 1))
    # -- near-field haze, lateral dropout ----------------------------------------------------
    d0 = (0.05 + 0.2 * u[:, 10]).view(b, 1, 1, 1, 1)
    haze = (0.15 + 0.45 * u[:, 11]).view(b, 1, 1, 1, 1) * torch.exp(-yy / d0)
    haze = haze * (0.5 + _smooth_noise((b, f, 1), s, 16, g))
    x = x + on(12, 0.5) * haze * mask
    ang = torch.atan2(xx, yy + 1e-3)  # beam angle from the apex, radians
    a0 = ((u[:, 13] - 0.5) * 1.4).view(b, 1, 1, 1, 1)
    # partial, never total: a wedge lost completely would erase the RV and turn A4C into A2C
    wid = (0.08 + 0.12 * u[:, 14]).view(b, 1, 1, 1, 1)
    drop = (0.3 + 0.4 * u[:, 15]).view(b, 1, 1, 1, 1) * torch.exp(-0.5 * ((ang - a0) / wid) ** 2)
    x = x * (1 - on(16, 0.5) * drop)
    # -- speckle, cavity noise, blur ---------------------------------------------------------
    cells = int(s // (2 + 4 * float(torch.rand((), generator=g))))
    speck = _smooth_noise((b, f, 1), s, max(cells, 4), g) - 0.5
    x = x * (1 + on(17, 0.6) * (0.4 + 0.8 * u[:, 18]).view(b, 1, 1, 1, 1) * speck)
    cav = (0.02 + 0.12 * u[:, 19]).view(b, 1, 1, 1, 1) * _smooth_noise((b, f, 1), s, 24, g)
    x = x + on(20, 0.5) * cav * mask * (x < 0.1).float()
    x = x.clamp(0, 1)
    soft = on(21, 0.35).view(b) > 0
    if soft.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
        xs = x[soft].flatten(0, 2).unsqueeze(1)
        x[soft] = F.conv2d(F.pad(xs, (1, 1, 1, 1), mode="replicate"), k).view(-1, f, c, s, s)
    # -- burned-in marks: depth ticks down one side, specks of text ----------------------------
    marks = torch.zeros(b, 1, 1, s, s)
    for i in torch.nonzero(u[:, 22] < 0.5 * p).flatten().tolist():
        col = int(torch.randint(0, s, (), generator=g))
        step = int(torch.randint(4, 12, (), generator=g))
        marks[i, 0, 0, step::step, col] = 1.0
        for _ in range(int(torch.randint(0, 6, (), generator=g))):
            y0, x0 = (int(v) for v in torch.randint(0, s - 2, (2,), generator=g))
            w = int(torch.randint(1, 6, (), generator=g))
            marks[i, 0, 0, y0:y0 + 2, x0:x0 + w] = 0.6 + 0.4 * float(torch.rand((), generator=g))
    x = torch.maximum(x, marks)
    # -- renormalise like clip_input ---------------------------------------------------------
    flat = x[:, :, 0, ::2, ::2].reshape(b, -1)  # one channel, every other pixel: cheap
    q = torch.nanquantile(flat.where(flat > 0.02, torch.nan), 0.99, dim=1).nan_to_num(1.0)
    x = (x / q.clamp(min=0.1).view(b, 1, 1, 1, 1)).clamp(0, 1)
    out = torch.where(keep, orig, x).contiguous()
    if not geometry:
        return out
    kv = keep.view(b, 1)
    return out, torch.where(kv, torch.ones(b, 2), torch.stack([zx, z], 1))


def apex_zoom_boxes(boxes: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    """Boxes ``[B, ..., 4]`` (x0, y0, x1, y1 in 0..1 of the frame) under :func:`us_augment`'s
    zoom ``[B, 2]`` (lateral, axial) about the apex at the top centre; not clipped."""
    b = boxes.shape[0]
    zx = zoom[:, 0].view(b, *([1] * (boxes.dim() - 2)))
    zy = zoom[:, 1].view(b, *([1] * (boxes.dim() - 2)))
    x0, y0, x1, y1 = boxes.unbind(-1)
    # output normalised x' = zx * x (about the centre), y' = zy * y (about the top row)
    return torch.stack([(x0 - 0.5) * zx + 0.5, y0 * zy, (x1 - 0.5) * zx + 0.5, y1 * zy], -1)


