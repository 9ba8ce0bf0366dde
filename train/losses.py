"""The training losses: the three heads against their labels (:class:`MaskedLoss`),
and the teachers' averaged outputs as soft targets (:class:`Teachers`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.meta import ModelMeta
from engines.model import load_checkpoint, mean_outputs
from realtime.errors import RealtimeError

log = logging.getLogger(__name__)


#: Spread (years) of the Gaussian a distribution years head learns around each true age.
AGE_SIGMA = 2.0


def age_distribution(years: torch.Tensor, bins: int, sigma: float = AGE_SIGMA) -> torch.Tensor:
    """Ages (N,) float -> (N, bins) float32 rows summing to 1: a Gaussian over the whole
    ages 0..bins-1 centred on each age (clamped into that range)."""
    ages = torch.arange(bins, dtype=torch.float32, device=years.device)
    centre = years.float().clamp(0, bins - 1)[:, None]
    return torch.softmax(-0.5 * ((ages - centre) / sigma) ** 2, dim=1)


class MaskedLoss(nn.Module):
    """Sum of the three heads' losses, each over the samples whose label is known.

    Age group and gender: cross-entropy (optional class weights, label smoothing),
    unknown labels (-1) masked out. Years: L1 in years times ``years_weight``, only
    where the exact age is known (not NaN); a distribution head (``outputs`` carries its
    logits (N, bins) as a fourth item) adds the KL divergence from a Gaussian of
    ``AGE_SIGMA`` years around the true age to its softmax (DLDL). A head with no known
    label in the batch adds ``0 * logits.sum()`` so every parameter still gets a gradient
    (DDP needs it).
    """

    def __init__(self, age_weight: torch.Tensor | None = None, gender_weight: torch.Tensor | None = None,
                 label_smoothing: float = 0.0, years_weight: float = 0.1):  # fmt: skip
        super().__init__()
        self.register_buffer("age_weight", age_weight)
        self.register_buffer("gender_weight", gender_weight)
        self.label_smoothing = label_smoothing
        self.years_weight = years_weight

    def forward(self, outputs, age_group, age_years, gender, soft=None, distill: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """``soft``: the teachers' ``(age_probs (N, A), gender_probs (N, G), years (N,))``
        for this batch (see :class:`Teachers`); each head's loss is then
        ``(1 - distill) * loss on the labels + distill * loss on the teachers' outputs``,
        the latter over every sample, labelled or not."""
        age_logits, gender_logits, years, *rest = outputs
        years_logits = rest[0] if rest else None
        parts = {
            "age": self._ce(age_logits, age_group, self.age_weight),
            "gender": self._ce(gender_logits, gender, self.gender_weight),
        }
        known = torch.isfinite(age_years)
        parts["years"] = (
            self.years_weight * F.l1_loss(years[known].float(), age_years[known])
            if known.any()
            else 0.0 * years.sum()
        )
        if years_logits is not None:
            parts["years"] = parts["years"] + (
                F.kl_div(years_logits[known].float().log_softmax(1), age_distribution(age_years[known], years_logits.shape[1]), reduction="batchmean")
                if known.any()
                else 0.0 * years_logits.sum()
            )
        if soft is not None and distill > 0:
            taught = {
                "age": F.cross_entropy(age_logits.float(), soft[0].float()),
                "gender": F.cross_entropy(gender_logits.float(), soft[1].float()),
                "years": self.years_weight * F.l1_loss(years.float(), soft[2].float()),
            }
            parts = {k: (1 - distill) * parts[k] + distill * taught[k] for k in parts}
        total = parts["age"] + parts["gender"] + parts["years"]
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _ce(self, logits, target, weight) -> torch.Tensor:
        known = target >= 0
        if not known.any():
            return 0.0 * logits.sum()
        return F.cross_entropy(logits[known].float(), target[known], weight=weight, label_smoothing=self.label_smoothing)


class Teachers(nn.Module):
    """Frozen trained models whose averaged outputs are a student's soft targets.

    Called on the student's normalised batch (N, 3, S, S) float32, each teacher at its
    own input size (resized when it differs); returns ``(age_probs (N, A), gender_probs
    (N, G), years (N,))`` float32, the mean over teachers."""

    def __init__(self, paths: tuple[Path, ...], meta: ModelMeta):
        super().__init__()
        nets = []
        for path in paths:
            net = load_checkpoint(path)
            theirs = net.meta
            if (theirs.age_labels, theirs.gender_labels, theirs.mean, theirs.std) != (meta.age_labels, meta.gender_labels, meta.mean, meta.std):
                raise RealtimeError(f"--teacher {path}: its labels or input normalisation differ from the model being trained")
            nets.append(net.requires_grad_(False).to(memory_format=torch.channels_last))
        self.nets = nn.ModuleList(nets).eval()

    def train(self, mode: bool = True) -> "Teachers":
        return super().train(False)  # always in eval mode (batch norm statistics, no dropout)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = []
        for net in self.nets:
            side = net.meta.input_size
            xi = x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
            outs.append(tuple(t.float() for t in net.probabilities(xi)))
        return mean_outputs(outs)


class FeatureMatch(nn.Module):
    """Feature distillation: the student's pooled feature (N, F), through a linear
    projection (trained with the student, not kept in the model), towards a teacher's
    feature (N, D); the loss is the mean of ``1 - cosine``."""

    def __init__(self, student_features: int, teacher_features: int):
        super().__init__()
        self.projection = nn.Linear(student_features, teacher_features)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (1 - F.cosine_similarity(self.projection(student.float()), teacher.float(), dim=1)).mean()


def class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes) from (N,) int labels, -1 ignored."""
    counts = np.bincount(labels[labels >= 0], minlength=classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(w, dtype=torch.float32)
