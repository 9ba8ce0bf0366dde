"""A second opinion on gender and age: the face-identity network's own heads, fused with the model's.

Re-identification already runs HSE's faceres network (:class:`realtime.embedders.FaceresEmbedder`)
on each confirmed track; the same run gives faceres' P(male) and its age (100 one-year
bins), learned from other faces than ours (VGGFace2 pretraining, IMDB-WIKI labels). Its
gender re-centred (faceres says "male" too readily on photos in the wild), each averaged
half and half with the model's calibrated outputs, the app is right more often than with
either alone (README, "A second opinion on gender and age"); on faces taken for children
the model's gender stands alone.

``looks(male, age, gender_labels, age_labels)`` -> an :class:`Opinion` per face, in the
model's label order; ``fuse(gender, age, years, opinion)`` -> the answer shown, the same
in the tracker, on photos and in ``realtime eval``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.ages import AgeScheme
from engines.calibration import platt
from engines.errors import RealtimeError
from engines.meta import ModelMeta

#: Platt re-centring of faceres' P(male) at the re-identification crop (1.5x the box,
#: 224 px, one view): fitted on 3,000 LFW photos of the training persons, each through
#: the detector (``python docs/model/wild/fit_second_opinion.py ../shared/data/lfw``:
#: balanced gender there 96.73% raw, 98.31% re-centred).
FACERES_PLATT = (2.6844, -2.3937)
#: The ages (years) of faceres' 100 age bins.
FACERES_AGES = np.arange(1, 101, dtype=np.float64)
#: The opinion's share of the fused answer (the model's: the rest).
WEIGHT = 0.5
#: Faces the fused age puts under this (years) keep the model's gender alone: faceres is
#: near chance on children (UTKFace hold-out under 13: faceres 58.7%, the model 69.9%).
MIN_YEARS = 13.0


@dataclass(frozen=True)
class Opinion:
    """faceres' answers on faces, or their sums over a track's looks (``n`` of them):
    gender (..., G) re-centred probabilities, age (..., A) group probabilities in the
    model's scheme, years (...), all float32."""

    gender: np.ndarray
    age: np.ndarray
    years: np.ndarray
    n: int = 1

    def __add__(self, other: "Opinion") -> "Opinion":
        return Opinion(self.gender + other.gender, self.age + other.age, self.years + other.years, self.n + other.n)

    def __getitem__(self, k) -> "Opinion":
        """One face's (or a subset's) answers."""
        return Opinion(self.gender[k], self.age[k], self.years[k], self.n)

    def mean(self) -> "Opinion":
        return Opinion(self.gender / self.n, self.age / self.n, self.years / self.n, 1)


def supported(meta: ModelMeta) -> bool:
    """Whether a model can take the opinion: its genders are female and male, and its age
    labels are ranges of years ("25-32", "60+") faceres' ages can be put in."""
    if sorted(meta.gender_labels) != ["female", "male"]:
        return False
    try:
        AgeScheme.from_labels(meta.age_labels)
    except RealtimeError:
        return False
    return True


def age_groups(age_labels: tuple[str, ...]) -> np.ndarray:
    """(100, A) float32 one-hot: faceres' age bin -> the model's age group."""
    groups = AgeScheme.from_labels(age_labels).group_of(FACERES_AGES)
    matrix = np.zeros((len(FACERES_AGES), len(age_labels)), np.float32)
    matrix[np.arange(len(FACERES_AGES)), groups] = 1.0
    return matrix


def looks(male: np.ndarray, age: np.ndarray, gender_labels: tuple[str, ...], age_labels: tuple[str, ...]) -> Opinion:
    """faceres' raw (N,) P(male) and (N, 100) age probabilities -> the N faces' Opinion
    in the model's label orders (gender re-centred by :data:`FACERES_PLATT`)."""
    p = platt(np.asarray(male, np.float32).reshape(-1), *FACERES_PLATT)
    columns = {"male": p, "female": 1 - p}
    age = np.asarray(age, np.float32).reshape(len(p), -1)
    return Opinion(np.stack([columns[g] for g in gender_labels], axis=1).astype(np.float32),
                   (age @ age_groups(age_labels)).astype(np.float32),
                   (age @ FACERES_AGES.astype(np.float32)).astype(np.float32))


def ask(net, image: np.ndarray, boxes: np.ndarray, meta: ModelMeta) -> tuple[np.ndarray, Opinion]:
    """One faceres run (:meth:`realtime.embedders.FaceresEmbedder.look`) on a BGR frame's
    (N, 4) boxes -> its (N, 1024) identity vectors and the N faces' Opinion for ``meta``'s labels."""
    vectors, male, age = net.look(image, boxes)
    return vectors, looks(male, age, meta.gender_labels, meta.age_labels)


def takes_gender(years) -> np.ndarray:
    """Whether faces of these fused ages (...) take the opinion's gender (bool, same shape)."""
    return np.asarray(years, np.float32) >= MIN_YEARS


def fuse(gender: np.ndarray, age: np.ndarray, years, opinion: Opinion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's gender (..., G), age (..., A) probabilities and years (...), and the
    opinion's (a mean, same shapes) -> the fused (gender, age, years), float32: each
    ``WEIGHT`` of the opinion, except the gender of a face whose fused age is under
    :data:`MIN_YEARS`, which stays the model's."""
    w = WEIGHT
    age = ((1 - w) * np.asarray(age, np.float32) + w * opinion.age).astype(np.float32)
    years = ((1 - w) * np.asarray(years, np.float32) + w * opinion.years).astype(np.float32)
    gender = np.asarray(gender, np.float32)
    adult = takes_gender(years)[..., None]
    return np.where(adult, (1 - w) * gender + w * opinion.gender, gender).astype(np.float32), age, years
