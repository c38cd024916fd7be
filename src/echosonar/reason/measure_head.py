"""Per-label logits from the detector's measurements, read as numbers.

Why: the prompt carries every measurement as text, but at this size neither the LM nor the
hidden-state head turns ``tr_jet_ratio 0.36`` into a decision reliably (session 4: a plain
cut-off rule on the same numbers scores TR 98 % balanced accuracy, the hidden-state head 88 %).
A linear layer on the standardised numbers -- one slot per ``(view, quantity)`` the detector
measures, plus a presence bit -- adds what the text path loses. Its logits are added to the
hidden-state head's (``EchoSonarR._label_logits``); zero-initialised, so a new model starts
exactly where the hidden-state head alone would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from echosonar.detect.measure import measurement_slots
from echosonar.reason.prompt import numeric_measurements
from echosonar.schema import StudyFeatures

#: standardised values are clipped to +-Z_CLIP (a wild detector reading must not dominate)
Z_CLIP = 6.0


def raw_values(sf: StudyFeatures, slots: Sequence[tuple[str, str]]) -> list[float]:
    """The study's finite measurement per slot (NaN where the view or value is missing).

    >>> from echosonar.reason.synthetic import synthetic_studies
    >>> sf = synthetic_studies(1, seed=0)[0]
    >>> len(raw_values(sf, [("A4C", "lvedd_cm"), ("NOPE", "x")]))
    2
    """
    by = {(v.view, k): x for v in sf.views for k, x in numeric_measurements(v.measurements or {})}
    return [float(by.get(s, math.nan)) for s in slots]


class MeasurementHead(nn.Module):
    """``forward(batch) -> [B, n_labels]`` logits from ``2K`` inputs: per slot the value
    standardised with training statistics (buffers ``mean``/``std`` ``[K]``, saved with the
    model; :meth:`fit_stats`) and a presence bit; a missing value reads 0 with presence 0."""

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.slots = measurement_slots()
        k = len(self.slots)
        self.register_buffer("mean", torch.zeros(k))
        self.register_buffer("std", torch.ones(k))
        self.linear = nn.Linear(2 * k, n_labels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def fit_stats(self, studies: Sequence[StudyFeatures]) -> None:
        """Set ``mean``/``std`` per slot from ``studies`` (the training split); slots never
        measured keep 0/1, and std is floored so a constant slot cannot blow up."""
        x = torch.tensor([raw_values(sf, self.slots) for sf in studies], dtype=torch.float64)
        for j in range(x.shape[1]):
            col = x[:, j][~torch.isnan(x[:, j])]
            if len(col) >= 2:
                self.mean[j] = float(col.mean())
                self.std[j] = max(float(col.std()), 1e-3)

    def features(self, batch: Sequence[StudyFeatures]) -> Tensor:
        """``[B, 2K]`` float32 inputs on the head's device."""
        x = torch.tensor([raw_values(sf, self.slots) for sf in batch], dtype=torch.float32,
                         device=self.mean.device)
        present = ~torch.isnan(x)
        z = ((x - self.mean) / self.std).clamp(-Z_CLIP, Z_CLIP)
        z = torch.where(present, z, torch.zeros_like(z))
        return torch.cat([z, present.float()], -1)

    def forward(self, batch: Sequence[StudyFeatures]) -> Tensor:
        return self.linear(self.features(batch))
