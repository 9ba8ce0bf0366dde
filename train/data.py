"""The labelled face set (:class:`LabelledSet`), its train/test splits and its pixels in RAM.

Every reader (:mod:`train.formats`) returns a :class:`LabelledSet`, parallel arrays
over N images. Unknown labels are kept as ``-1`` (classes) or ``NaN`` (years) so
each head's loss can mask them out (:mod:`train.labels`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from engines.crops import framed_side, warp_square
from engines.errors import RealtimeError
from engines.files import file_sha256
from engines.images import decode_image, read_bytes

log = logging.getLogger(__name__)


@dataclass
class LabelledSet:
    """N labelled face images as parallel arrays.

    Attributes:
        files: N image paths.
        age_group: (N,) int64 index into ``AGE_LABELS``, -1 unknown.
        age_years: (N,) float32 exact age in years, NaN where only a range or nothing is known.
        gender: (N,) int64 index into ``GENDER_LABELS``, -1 unknown.
        race: (N,) int64 UTKFace race code (``RACE_LABELS``), -1 unknown or other data.
        folds: (N,) int64 official fold (Adience), -1 where the data has none.
        groups: (N,) object (str) split key: images with the same key always land on
            the same side of a split (UTKFace: the capture date-time in the file name,
            which identifies the photo; Adience: the subject). "" where the data has
            none: those images are keyed by the sha256 of their bytes.
        source: (N,) int64 which of several sets given together (:func:`load_sets`)
            the image came from, in the order given; 0 for one set.
        digests: (N,) object (str) sha256 of each file's bytes, "" until the file is
            read: :func:`read_images` hashes the bytes it decodes, :meth:`content_keys`
            reads only the files not hashed yet, so a run reads and hashes each file once
            (its split keys and its teacher cache's rows use the same digests).
        framing: (N,) float32 how many times the face box's side each image spans
            (a ``realtime facecrops`` set records its ``crop_scale``), NaN where not
            known: the image is then taken as cut at the model's own framing (an
            aligned chip). Readers cut each face to the framing they need from it.
        root: the data directory the files are under (for relative names).
        skipped: images listed or found but dropped (missing, unreadable, unlabelled).
    """

    files: list[Path]
    age_group: np.ndarray
    age_years: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    folds: np.ndarray
    groups: np.ndarray | None = None
    root: Path = Path(".")
    skipped: int = 0
    source: np.ndarray | None = None
    digests: np.ndarray | None = None
    framing: np.ndarray | None = None
    _ARRAYS: tuple[str, ...] = field(default=("age_group", "age_years", "gender", "race", "folds", "groups", "source", "digests",
                                              "framing"), repr=False)

    def __post_init__(self) -> None:
        n = len(self.files)
        if self.groups is None:
            self.groups = np.full(n, "", object)
        if self.source is None:
            self.source = np.zeros(n, np.int64)
        if self.digests is None:
            self.digests = np.full(n, "", object)
        if self.framing is None:
            self.framing = np.full(n, np.nan, np.float32)
        for name in self._ARRAYS:
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")

    @classmethod
    def from_rows(cls, rows: list[tuple], root: Path, skipped: int = 0) -> "LabelledSet":
        """Rows of ``(file, age_group, age_years, gender, race, fold[, group])``."""
        rows = [(*r, "") if len(r) == 6 else r for r in rows]
        cols = list(zip(*rows)) if rows else [[]] * 7
        groups = np.empty(len(rows), object)
        groups[:] = cols[6]
        return cls(
            files=list(cols[0]),
            age_group=np.asarray(cols[1], np.int64).reshape(-1),
            age_years=np.asarray(cols[2], np.float32).reshape(-1),
            gender=np.asarray(cols[3], np.int64).reshape(-1),
            race=np.asarray(cols[4], np.int64).reshape(-1),
            folds=np.asarray(cols[5], np.int64).reshape(-1),
            groups=groups,
            root=root,
            skipped=skipped,
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> "LabelledSet":
        """Select images by index array or boolean mask; all fields stay aligned."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        arrays = {name: getattr(self, name)[index] for name in self._ARRAYS}
        return replace(self, files=[self.files[i] for i in index], **arrays)

    def names(self) -> list[str]:
        """File names relative to ``root`` (POSIX), for prediction tables."""
        out = []
        for f in self.files:
            try:
                out.append(f.relative_to(self.root).as_posix())
            except ValueError:
                out.append(str(f))
        return out

    def content_keys(self) -> list[str]:
        """sha256 of each file's bytes: byte-identical images share a key. Files not
        hashed yet are read now, once (``digests`` keeps them)."""
        for i in np.flatnonzero(self.digests == ""):
            self.digests[i] = file_sha256(self.files[i])
        return self.digests.tolist()

    def split_keys(self) -> list[str]:
        """Each image's split key: its ``groups`` entry (the sha256 of its bytes where
        that is empty), with keys merged wherever byte-identical images carry different
        ones, so neither a photo nor a copied file ever straddles a split."""
        content = self.content_keys()
        parent: dict[str, str] = {}

        def root(key: str) -> str:
            while parent.setdefault(key, key) != key:
                parent[key] = key = parent[parent[key]]
            return key

        keys = [str(g) or c for g, c in zip(self.groups, content)]
        hashes = set(content)
        for key, c in zip(keys, content):
            a, b = sorted((root(key), root(c)), key=lambda k: (k in hashes, k))
            if a != b:
                parent[b] = a  # a named key (capture, subject) stays the representative
        return [root(k) for k in keys]

    def describe(self) -> str:
        keyed = int((self.groups != "").sum())
        keys = f"{len(set(self.groups[self.groups != ''].tolist()))} split keys over {keyed} images" if keyed else "split by content hash"
        return (
            f"{len(self)} images ({int((self.age_group >= 0).sum())} with age group, "
            f"{int(np.isfinite(self.age_years).sum())} with exact age, {int((self.gender >= 0).sum())} with gender"
            f"; {keys}; {self.skipped} skipped)"
        )


# ----------------------------------------------------------------------------- splits
def assign_folds(data: LabelledSet, folds: int) -> np.ndarray:
    """(N,) int64 fold of each image, in ``[0, folds)``.

    Data with official folds (Adience) keeps them. Otherwise each image's fold comes
    from a hash of its split key (:meth:`LabelledSet.split_keys`: UTKFace's capture
    key, a CSV's ``group``, else the image's bytes), so one photo never sits in two
    folds and the split does not depend on file order, the set's size or the machine."""
    if folds < 1:
        raise RealtimeError(f"--folds must be at least 1, got {folds}")
    if (data.folds >= 0).all() and len(data):
        official = np.unique(data.folds)
        if folds > len(official):
            raise RealtimeError(f"the data has {len(official)} official folds; ask for at most that many with --folds")
        return data.folds.copy()
    return np.array([_key_hash(k) % folds for k in data.split_keys()], np.int64)


def holdout_mask(data: LabelledSet, fraction: float) -> np.ndarray:
    """(N,) bool, True for the held-out share ``fraction`` of the split keys (a photo's
    faces go together; deterministic, independent of order and of the set's size)."""
    if not 0.0 < fraction < 1.0:
        raise RealtimeError(f"--holdout must be a fraction between 0 and 1, got {fraction}")
    return np.array([_key_hash(k) / 2.0**64 < fraction for k in data.split_keys()], bool)


def _key_hash(key: str) -> int:
    """A uniform 64-bit number from a split key (content keys are sha256 hex already)."""
    if len(key) == 64 and all(c in "0123456789abcdef" for c in key):
        return int(key[:16], 16)
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)


# ----------------------------------------------------------------------------- pixels
def read_images(data: LabelledSet, side: int | None = None, progress: Callable[[int], None] | None = None,
                crop_scale: float | None = None) -> tuple[LabelledSet, np.ndarray]:
    """Read every image into RAM as BGR uint8 ``(N, side, side, 3)``.

    Each image is taken whole as the crop square (as ``Cropper.crop_whole`` does:
    centred, replicated edges for non-square images) and resized to ``side``; ``None``
    keeps the first image's size. With ``crop_scale`` (the model's framing), an image
    whose ``framing`` is known gives its centre square of ``crop_scale / framing`` of
    its side instead: the face framed as the model sees it. Unreadable files are
    skipped and counted in the returned set's ``skipped``."""
    keep, images, digests = [], None, []  # one array filled in place: no second copy of the set in RAM
    for i, path in enumerate(data.files):
        try:
            raw = read_bytes(path)
            image = decode_image(raw, path)
        except RealtimeError as e:
            log.warning("skipping %s", e)
            image = None
        if progress is not None:
            progress(1)
        if image is None:
            continue
        side = side or max(image.shape[:2])
        if images is None:
            images = np.empty((len(data), side, side, 3), np.uint8)
        images[len(keep)] = square(image, side, framed_side(1.0, float(data.framing[i]), crop_scale) if crop_scale else 1.0)
        keep.append(i)
        digests.append(hashlib.sha256(raw).hexdigest())  # the bytes just decoded: the file is not read again
    subset = data[np.asarray(keep, np.int64)]
    subset.digests[:] = digests
    subset.skipped = data.skipped + len(data) - len(keep)
    if not keep:
        raise RealtimeError(f"{data.root}: none of the {len(data)} images could be read")
    return subset, images[: len(keep)]


class Rows:
    """Rows ``index`` (K,) int64 of an image array (N, H, W, 3), read one at a time
    without copying them: a fold's training images, so the set is in RAM once."""

    def __init__(self, images: np.ndarray, index: np.ndarray):
        self.images, self.index = images, np.asarray(index, np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[self.index[i]]


def square(image: np.ndarray, side: int, zoom: float = 1.0) -> np.ndarray:
    """BGR (H, W, 3) -> (side, side, 3): the whole image centred in a square of its
    longer side (times ``zoom``: < 1 its centre), edges replicated, resized."""
    h, w = image.shape[:2]
    if h == w == side and zoom == 1.0:
        return image
    return warp_square(image, w / 2, h / 2, max(h, w) * zoom, side)
