"""A second opinion on gender: the face-identity network's own gender head, fused with the model's.

Re-identification already runs HSE's faceres network (:class:`realtime.embedders.FaceresEmbedder`)
on each confirmed track; the same run gives faceres' P(male), learned from other faces than
ours (VGGFace2 pretraining, IMDB-WIKI). Re-centred (faceres says "male" too readily on photos
in the wild) and averaged half and half with the model's calibrated probabilities, it is right
more often in the wild than either alone (README, "A second opinion on gender"); on
faces the model takes for children the model's answer stands alone.

``gender_opinion(p_male, gender_labels)`` -> (N, G) probabilities in the model's label order;
``fuse(ours, opinion, years)`` -> the answer shown, the same in the tracker and in ``realtime eval``.
"""

from __future__ import annotations

import numpy as np

from engines.calibration import platt

#: Platt re-centring of faceres' P(male) at the re-identification crop (1.5x the box,
#: 224 px, one view): fitted on 3,000 LFW photos of the training persons, each through
#: the detector (``python docs/model/wild/fit_second_opinion.py ../shared/data/lfw``:
#: balanced gender there 96.73% raw, 98.31% re-centred).
FACERES_PLATT = (2.6844, -2.3937)
#: The opinion's share of the fused answer (the model's: the rest).
WEIGHT = 0.5
#: Faces the model puts under this age (years) keep the model's gender alone: faceres is
#: near chance on children (UTKFace hold-out under 13: faceres 58.7%, the model 69.9%).
MIN_YEARS = 13.0


def supported(gender_labels: tuple[str, ...]) -> bool:
    """Whether a model with these gender labels can take the opinion (its labels are female and male)."""
    return sorted(gender_labels) == ["female", "male"]


def gender_opinion(p_male: np.ndarray, gender_labels: tuple[str, ...]) -> np.ndarray:
    """faceres' raw (N,) P(male) -> (N, G) float32 re-centred probabilities ordered as ``gender_labels``."""
    male = platt(np.asarray(p_male, np.float32).reshape(-1), *FACERES_PLATT)
    columns = {"male": male, "female": 1 - male}
    return np.stack([columns[g] for g in gender_labels], axis=1).astype(np.float32)


def fuse(ours: np.ndarray, opinion: np.ndarray, years) -> np.ndarray:
    """The model's (..., G) gender probabilities, the opinion's (same shape) and the
    model's age in years (...) -> the fused (..., G) float32: ``WEIGHT`` of the opinion
    where the model's age is at least ``MIN_YEARS``, the model's alone below it."""
    ours, opinion = np.asarray(ours, np.float32), np.asarray(opinion, np.float32)
    adult = (np.asarray(years, np.float32) >= MIN_YEARS)[..., None]
    return np.where(adult, (1 - WEIGHT) * ours + WEIGHT * opinion, ours).astype(np.float32)
