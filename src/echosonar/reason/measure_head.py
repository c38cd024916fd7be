"""Per-label logits from the detector's measurements, read as numbers.

Why: the prompt carries every measurement as text, but at this size neither the LM nor the
hidden-state head turns ``tr_jet_ratio 0.36`` into a decision reliably (2026-11-28,
docs/notes/reason.md: a plain cut-off rule on the same numbers scores TR 98 % balanced
accuracy, the hidden-state head 88 %).
A linear layer on the standardised numbers -- one slot per ``(view, quantity)`` the detector
measures, plus a presence bit -- adds what the text path loses. Its logits are added to the
hidden-state head's (``EchoSonarR._label_logits``); zero-initialised, so a new model starts
exactly where the hidden-state head alone would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The measurement vector has one home upstream (the classifier baselines read it too); its
# names stay importable from here.
from echosonar.detect.measure import (  # noqa: F401  (Z_CLIP, raw_values: re-exported)
    Z_CLIP,
    measurement_slots,
    measurement_values,
    raw_values,
    slot_statistics,
    standardised_measurements,
)
from echosonar.schema import StudyFeatures


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
        """Set ``mean``/``std`` per slot from ``studies`` (the training split); slots measured
        fewer than twice keep their values (0/1 on a new head), and std is floored so a
        constant slot cannot blow up."""
        mean, std = slot_statistics(measurement_values(studies, self.slots, torch.float64),
                                    self.mean, self.std)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def features(self, batch: Sequence[StudyFeatures]) -> Tensor:
        """``[B, 2K]`` float32 inputs on the head's device."""
        x = measurement_values(batch, self.slots).to(self.mean.device)
        return standardised_measurements(x, self.mean, self.std)

    def forward(self, batch: Sequence[StudyFeatures]) -> Tensor:
        return self.linear(self.features(batch))
