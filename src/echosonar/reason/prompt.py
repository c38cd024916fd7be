"""Prompt layout of EchoSonar-R: text with vision placeholders, one block per view.

For a study with views in ``taxonomy.VIEWS`` order the prompt text is::

    <s>echo study; views: A4C, PLAX.
    view A4C (apical 4-chamber):
    <clip><clip>...<clip>            (1+N, or LMConfig.max_clip_tokens)
    structures:
    <struct>...<struct>              (K = len(taxonomy.STRUCTURES), taxonomy order)
    boxes: LV (31,10,63,57), LA (36,58,62,86).
    measurements: ef_proxy_pct 42.1 (past the LV systolic dysfunction cut-off), lvedd_cm 4.91.
    view PLAX (parasternal long-axis):
    ...
    <gen>

Every ``<clip>``/``<struct>`` placeholder's embedding is replaced by a projected feature row
(:meth:`EchoSonarR.prompt_embeds`), so the LM sees the view name, its clip tokens, then its
structure tokens, and can copy the detector's boxes and measurements as text into its reasoning.
A measurement past a finding's guideline cut-off carries the flag an echo measurement package
prints (``taxonomy.findings_past_cutoff``, ``LMConfig.measurement_flags``, on by default
since 2026-12-06: the evidence targets cite it), because the small LM trained on a few hundred
studies did not learn to turn the bare numbers into findings (docs/notes/reason.md).
Missing views are absent; clips whose view is not in ``taxonomy.VIEWS`` (e.g. ``OTHER``) are
skipped. With ``use_structure_tokens=False`` the "structures:" block, the boxes and the
measurements are all dropped (the "VLM without structure tokens" ablation).
The completion (SFT target, generation) starts right after the prompt with ``<think>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# numeric_measurements: the finite-number filter has one home upstream (the measurement vector
# the label heads and the classifier baselines read); importable from here as before.
from echosonar.detect.measure import numeric_measurements
from echosonar.reason.tokenizer import BOS, CLIP, GEN, STRUCT
from echosonar.schema import StudyFeatures, ViewFeatures
from echosonar.taxonomy import STRUCTURES, VIEW_NAMES, VIEWS, findings_past_cutoff
from echosonar.textformat import box_to_text


def fmt_measurement(value: float) -> str:
    """A measurement as the prompt prints it (3 significant digits); the targets and
    :mod:`echosonar.reason.grounding` cite it in exactly this form.

    >>> fmt_measurement(4.7812), fmt_measurement(0.0), fmt_measurement(67.54)
    ('4.78', '0', '67.5')
    """
    return f"{float(value):.3g}"


def measurement_text(key: str, value: float, flags: bool = True) -> str:
    """One detector measurement as prompt text, with its reference-range flag when ``flags``.

    >>> measurement_text("tr_jet_ratio", 0.3551)
    'tr_jet_ratio 0.355 (past the tricuspid regurgitation cut-off)'
    >>> measurement_text("lvedd_cm", 5.5), measurement_text("lvedd_cm", 5.5, flags=False)
    ('lvedd_cm 5.5 (past the LV enlargement cut-off for women)', 'lvedd_cm 5.5')
    """
    text = f"{key} {fmt_measurement(value)}"
    past = findings_past_cutoff(key, value) if flags else []
    if past:
        text += " (" + "; ".join(f"past the {name} cut-off{' ' + q if q else ''}"
                                 for name, q in past) + ")"
    return text


def view_text(v: ViewFeatures, use_structure_tokens: bool, flags: bool = False) -> str:
    """The text after a view's structure tokens: detector boxes and measurements (with
    reference-range flags when ``flags``), or "" without structure tokens."""
    return _view_body(v, flags)[0] if use_structure_tokens else ""


def _view_body(v: ViewFeatures, flags: bool) -> tuple[str, list[tuple[int, int]]]:
    """:func:`view_text` and the character spans ``[a, b)`` in it of the two texts a
    reasoning line cites verbatim: the boxes and the measurements."""
    boxes = ", ".join(f"{s} {box_to_text(v.boxes[s])}" for s in STRUCTURES if s in v.boxes)
    meas = ", ".join(measurement_text(k, x, flags)
                     for k, x in numeric_measurements(v.measurements))
    boxes, meas = boxes or "none", meas or "none"
    a = len("boxes: ")
    b = a + len(boxes) + len(".\nmeasurements: ")
    return (f"boxes: {boxes}.\nmeasurements: {meas}.\n",
            [(a, a + len(boxes)), (b, b + len(meas))])


def ordered_views(sf: StudyFeatures) -> list[ViewFeatures]:
    """The study's views that enter the prompt, in ``taxonomy.VIEWS`` order (stable)."""
    rank = {v: i for i, v in enumerate(VIEWS)}
    return sorted((v for v in sf.views if v.view in rank), key=lambda v: rank[v.view])


@dataclass
class PromptParts:
    """One study's prompt before embedding.

    Attributes:
        text: the prompt with ``<clip>``/``<struct>`` placeholders (bos first).
        clip: float32 ``[n_clip_total, D_enc]`` — the clip-token rows, in placeholder order.
        struct: float32 ``[n_struct_total, D_det + 1]`` — structure tokens with the detector
            score appended as the last column, in placeholder order (empty when disabled).
        struct_type: int64 ``[n_struct_total]`` — structure class index of each struct row.
        views: the views in prompt order.
        view_starts: character offset in ``text`` where each view's block begins (its
            ``view V (...)`` header), in ``views`` order; the block runs to the next start
            (the last one to the final ``<gen>``).
        cite_spans: character spans ``[a, b)`` of each block's boxes and measurements text
            (what a reasoning line cites verbatim; ``textformat.citation_spans`` is the
            generation's side).
    """

    text: str
    clip: np.ndarray
    struct: np.ndarray
    struct_type: np.ndarray
    views: list[str]
    view_starts: list[int] = field(default_factory=list)
    cite_spans: list[tuple[int, int]] = field(default_factory=list)

    def cite_mask(self, offsets: list[tuple[int, int]]) -> np.ndarray:
        """Per-token bool ``[T]``: the token overlaps a :attr:`cite_spans` span."""
        return spans_mask(offsets, self.cite_spans)

    def segment_ids(self, offsets: list[tuple[int, int]]) -> np.ndarray:
        """Per-token segment ``[T]`` from the tokens' character ``offsets``: ``1 +`` the
        ``taxonomy.VIEWS`` index of the block a token starts in, 0 before the first block and
        for the final ``<gen>``."""
        end = self.text.rindex(GEN)
        starts = np.asarray(self.view_starts + [end])
        seg = np.zeros(len(offsets), np.int64)
        for i, (a, _) in enumerate(offsets):
            j = int(np.searchsorted(starts, a, side="right")) - 1
            if 0 <= j < len(self.views):
                seg[i] = VIEWS.index(self.views[j]) + 1
        return seg


def pool_clip_tokens(tokens: np.ndarray, keep: int) -> np.ndarray:
    """``[1+N, D]`` -> ``[min(keep, 1+N), D]``: the global token, then the N space-time tokens
    average-pooled into ``keep - 1`` contiguous groups. ``keep=0`` keeps everything."""
    if keep <= 0 or tokens.shape[0] <= keep:
        return tokens
    if keep == 1:
        return tokens[:1]
    groups = np.array_split(tokens[1:], keep - 1, axis=0)
    return np.concatenate([tokens[:1], np.stack([g.mean(0) for g in groups])], axis=0)


def build_prompt(sf: StudyFeatures, use_structure_tokens: bool = True,
                 max_clip_tokens: int = 0, measurement_flags: bool = False) -> PromptParts:
    """Lay out one study's prompt (see the module docstring). Raises ``ValueError`` naming the
    study for feature arrays of the wrong rank or structure count, or a study with no view."""
    views = ordered_views(sf)
    if not views:
        raise ValueError(f"study {sf.key}: no view of {', '.join(VIEWS)} to build a prompt from")
    k = len(STRUCTURES)
    lines = [f"{BOS}echo study; views: {', '.join(v.view for v in views)}.\n"]
    clips, structs, types, starts, cites = [], [], [], [], []
    for v in views:
        starts.append(sum(len(x) for x in lines))
        ct = np.asarray(v.clip_tokens, np.float32)
        if ct.ndim != 2 or ct.shape[0] < 1:
            raise ValueError(f"study {sf.key} view {v.view}: clip_tokens must be [1+N, D], "
                             f"got shape {ct.shape}")
        ct = pool_clip_tokens(ct, max_clip_tokens)
        clips.append(ct)
        lines.append(f"view {v.view} ({VIEW_NAMES[v.view]}):\n{CLIP * ct.shape[0]}\n")
        if use_structure_tokens:
            st = np.asarray(v.structure_tokens, np.float32)
            sc = np.asarray(v.structure_scores, np.float32).reshape(-1)
            if st.ndim != 2 or st.shape[0] != k or sc.shape[0] != k:
                raise ValueError(f"study {sf.key} view {v.view}: structure_tokens must be "
                                 f"[{k}, D] and structure_scores [{k}], got {st.shape} and "
                                 f"{sc.shape}")
            structs.append(np.concatenate([st, sc[:, None]], axis=1))
            types.append(np.arange(k))
            head = f"structures:\n{STRUCT * k}\n"
            body, spans = _view_body(v, measurement_flags)
            at = sum(len(x) for x in lines) + len(head)
            cites += [(at + a, at + b) for a, b in spans]
            lines.append(head + body)
    lines.append(GEN)
    d_det = structs[0].shape[1] if structs else 0
    return PromptParts(
        text="".join(lines),
        clip=np.concatenate(clips, axis=0),
        struct=np.concatenate(structs, axis=0) if structs else np.zeros((0, d_det), np.float32),
        struct_type=np.concatenate(types).astype(np.int64) if types else np.zeros(0, np.int64),
        views=[v.view for v in views], view_starts=starts, cite_spans=cites)


def spans_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    """Per-token bool ``[T]`` from tokens' character ``offsets``: True where a token overlaps
    one of the character ``spans`` ``[a, b)``.

    >>> spans_mask([(0, 3), (3, 4), (4, 8)], [(2, 4)]).tolist()
    [True, True, False]
    """
    if not len(offsets) or not spans:
        return np.zeros(len(offsets), bool)
    tok, sp = np.asarray(offsets).reshape(-1, 2), np.asarray(spans)
    return ((tok[:, :1] < sp[None, :, 1]) & (tok[:, 1:] > sp[None, :, 0])).any(1)


def feature_dims(sf: StudyFeatures) -> dict[str, int]:
    """``{"clip": D_enc, "structure": D_det}`` read from a study's first view."""
    v = sf.views[0]
    return {"clip": int(np.asarray(v.clip_tokens).shape[-1]),
            "structure": int(np.asarray(v.structure_tokens).shape[-1])}
