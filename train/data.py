"""Labelled face sets: Adience, UTKFace and plain CSV, read into one container.

Every loader returns a :class:`LabelledSet`, parallel arrays over N images. Unknown
labels are kept as ``-1`` (classes) or ``NaN`` (years) so each head's loss can mask
them out; they are never a class of their own.

Age mapping (:func:`age_group_of`): an age in years goes to the nearest of the 8
Adience groups (0-2, 4-6, 8-12, 15-20, 25-32, 38-43, 48-53, 60-100), ties to the
younger group. For whole years that is 0-3, 4-7, 8-13, 14-22, 23-35, 36-45, 46-56, 57+.
An Adience range such as ``(25, 32)`` goes to the group of its midpoint by the same
rule, so the official ranges land in their own group and odd ones such as ``(8, 23)``
(midpoint 15.5 -> 15-20) or ``(38, 48)`` (midpoint 43 -> 38-43) land by their middle.
Only exact ages train and score the years head.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from engines.crops import IMAGE_SUFFIXES, warp_square
from engines.errors import RealtimeError
from engines.images import read_image
from engines.limits import LIMITS
from engines.meta import AGE_LABELS, GENDER_LABELS

log = logging.getLogger(__name__)

FORMATS = ("adience", "utkface", "csv")
#: UTKFace race codes 0-4.
RACE_LABELS: tuple[str, ...] = ("White", "Black", "Asian", "Indian", "Others")
_GROUP_BOUNDS = np.array([[int(a), int(b)] for a, b in (g.split("-") for g in AGE_LABELS)], np.float64)
_GENDER_WORDS = {
    "f": "female", "female": "female", "woman": "female", "w": "female",
    "m": "male", "male": "male", "man": "male",
}  # fmt: skip
_UNKNOWN_WORDS = {"", "u", "unknown", "none", "nan", "na", "n/a", "-1", "?"}


def age_group_of(age: float) -> int:
    """Index into ``AGE_LABELS`` of the group nearest to ``age`` years, ties to the lower."""
    if not math.isfinite(age):
        return -1
    distance = np.maximum(np.maximum(_GROUP_BOUNDS[:, 0] - age, age - _GROUP_BOUNDS[:, 1]), 0.0)
    return int(np.argmin(distance))  # argmin returns the first (youngest) of equal distances


def gender_index(value: str, source: str = "label") -> int:
    """``"f"``, ``"female"``, ``"m"``, ``"male"``... -> index into ``GENDER_LABELS``; unknown -> -1."""
    word = str(value).strip().lower()
    if word in _UNKNOWN_WORDS:
        return -1
    if word not in _GENDER_WORDS:
        raise RealtimeError(f"{source}: gender {value!r} is not one of male, female, m, f, u or empty")
    return GENDER_LABELS.index(_GENDER_WORDS[word])


def parse_age(value: str, source: str = "label") -> tuple[int, float]:
    """An age field -> (group index or -1, exact years or NaN).

    Accepts exact years (``"35"``, ``"35.0"``), Adience ranges (``"(25, 32)"``), a group
    name from ``AGE_LABELS`` (``"25-32"``) and unknowns (``"None"``, empty)."""
    text = str(value).strip()
    if text.lower() in _UNKNOWN_WORDS:
        return -1, math.nan
    numbers = re.fullmatch(r"\(?\s*(\d+(?:\.\d+)?)\s*(?:[,-]\s*(\d+(?:\.\d+)?)\s*)?\)?", text)
    if numbers is None:
        raise RealtimeError(f"{source}: age {value!r} is neither years, a range like (25, 32) nor empty")
    low, high = numbers.groups()
    for end in (low, high):
        if end is not None and (problem := LIMITS["age_years"].problem(float(end))):
            raise RealtimeError(f"{source}: age {value!r}: {problem} years")
    if high is None:
        years = float(low)
        return age_group_of(years), years
    if text in AGE_LABELS:
        return AGE_LABELS.index(text), math.nan
    return age_group_of((float(low) + float(high)) / 2), math.nan


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
    _ARRAYS: tuple[str, ...] = field(default=("age_group", "age_years", "gender", "race", "folds", "groups", "source"), repr=False)

    def __post_init__(self) -> None:
        n = len(self.files)
        if self.groups is None:
            self.groups = np.full(n, "", object)
        if self.source is None:
            self.source = np.zeros(n, np.int64)
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
        """sha256 of each file's bytes: byte-identical images share a key."""
        keys = []
        for f in self.files:
            with open(f, "rb") as fh:
                keys.append(hashlib.sha256(fh.read()).hexdigest())
        return keys

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


# ----------------------------------------------------------------------------- loaders
_LOADERS: dict[str, Callable[[Path], LabelledSet]] = {}


def register_format(name: str):
    def wrap(fn):
        _LOADERS[name] = fn
        return fn

    return wrap


def load_dataset(root: str | Path, fmt: str) -> LabelledSet:
    """Read the labels of a face set in ``fmt`` (one of :data:`FORMATS`) under ``root``.

    Images that are listed but missing are skipped and counted (``.skipped``); reading
    pixels (and skipping unreadable files) happens in :func:`read_images`."""
    root = Path(root)
    if fmt not in _LOADERS:
        raise RealtimeError(f"unknown data format {fmt!r}; choose one of: {', '.join(_LOADERS)}")
    if not root.exists():
        raise RealtimeError(f"data directory not found: {root}")
    data = _LOADERS[fmt](root)
    if len(data) == 0:
        raise RealtimeError(f"{root}: no labelled images found in {fmt} layout (skipped {data.skipped}); check --format")
    log.info("%s (%s): %s", root, fmt, data.describe())
    return data


def label_files(root: str | Path) -> list[Path]:
    """The files holding the labels of a set at ``root`` (the CSV itself, a labels.csv,
    Adience's fold files), which no output may overwrite; the folder itself too."""
    root = Path(root)
    if root.is_file():
        return [root]
    return [root, *(p for p in (root / "labels.csv", *root.glob("fold_*_data.txt")) if p.exists())]


@register_format("adience")
def load_adience(root: Path) -> LabelledSet:
    """Adience's published layout: ``fold_<k>_data.txt`` (tab-separated, with header) and
    images ``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>`` or
    ``aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>``.
    ``.folds`` holds the official, subject-exclusive fold ``k``."""
    fold_files = sorted(root.glob("fold_[0-9]*_data.txt"), key=lambda p: int(p.name.split("_")[1]))
    fold_files = [p for p in fold_files if re.fullmatch(r"fold_\d+_data\.txt", p.name)]
    if not fold_files:
        raise RealtimeError(f"{root}: no Adience fold files (fold_0_data.txt ... fold_4_data.txt); is this Adience?")
    layouts = (("faces", "coarse_tilt_aligned_face"), ("aligned", "landmark_aligned_face"))
    rows, skipped = [], 0
    for fold_file in fold_files:
        fold = int(fold_file.name.split("_")[1])
        reader = csv.DictReader(text_lines(fold_file), delimiter="\t")
        missing = {"user_id", "original_image", "face_id", "age", "gender"} - {
            (c or "").strip() for c in reader.fieldnames or []
        }
        if missing:
            raise RealtimeError(f"{fold_file}: missing columns {sorted(missing)}; is this an Adience fold file?")
        for line, rec in enumerate(reader, start=2):
            source = f"{fold_file.name}:{line}"
            rec = _fields(rec, source, len(reader.fieldnames))
            path = next(
                (
                    p
                    for folder, prefix in layouts
                    if (p := root / folder / rec["user_id"] / f"{prefix}.{rec['face_id']}.{rec['original_image']}").is_file()
                ),
                None,
            )
            if path is None:
                skipped += 1
                continue
            group, years = parse_age(rec["age"], source)
            gender = gender_index(rec["gender"], source)
            if group < 0 and gender < 0:
                skipped += 1
                continue
            rows.append((path, group, years, gender, -1, fold, f"subject:{rec['user_id']}"))
    return LabelledSet.from_rows(rows, root, skipped)


@register_format("utkface")
def load_utkface(root: Path) -> LabelledSet:
    """UTKFace: a ``labels.csv`` (file, age, gender, race) if present, else images named
    ``<age>_<gender>_<race>_<date>.jpg...`` (gender 0 male, 1 female) anywhere under ``root``."""
    if (root / "labels.csv").is_file():
        data = _read_csv(root / "labels.csv", root)
        data.groups[:] = [utkface_capture_key(f) for f in data.files]
        return data
    rows, skipped = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _is_image(p)):
        parts = path.name.split("_")
        try:
            years = float(int(parts[0]))
        except ValueError:
            skipped += 1
            continue
        gender = {"0": GENDER_LABELS.index("male"), "1": GENDER_LABELS.index("female")}.get(parts[1] if len(parts) > 1 else "", -1)
        race = int(parts[2]) if len(parts) > 2 and parts[2] in {"0", "1", "2", "3", "4"} else -1
        rows.append((path, age_group_of(years), years, gender, race, -1, utkface_capture_key(path)))
    return LabelledSet.from_rows(rows, root, skipped)


_CAPTURE_KEY = re.compile(r"_(\d{8,})\.(?:jpe?g|png)", re.IGNORECASE)


def utkface_capture_key(path: Path) -> str:
    """The capture date-time in a UTKFace file name (``26_1_0_20170116171048641.jpg.chip.jpg``
    -> ``"capture:20170116171048641"``): it identifies the photo, so re-encoded copies
    and several faces of one photo share it. "" when the name has none."""
    m = _CAPTURE_KEY.search(Path(path).name)
    return f"capture:{m.group(1)}" if m else ""


@register_format("csv")
def load_csv(root: Path) -> LabelledSet:
    """A plain CSV: ``root`` is the CSV file, or a directory holding ``labels.csv``.
    Columns: ``file`` (relative to the CSV's folder), ``age`` (years or a range) or
    ``age_group`` (a name from ``AGE_LABELS`` or its index), ``gender``; ``race`` and
    ``group`` (split key: a person or photo id; images sharing it never straddle a
    split) optional."""
    path = root if root.is_file() else root / "labels.csv"
    if not path.is_file():
        raise RealtimeError(f"{root}: no labels.csv here; pass the CSV file or a folder holding labels.csv")
    return _read_csv(path, path.parent)


def text_lines(path: Path) -> list[str]:
    """A label file's lines: UTF-8 (with or without a BOM), or UTF-16 with its BOM (as
    spreadsheet programs save "Unicode text"); anything else is one line saying so."""
    data = path.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding).splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise RealtimeError(f"{path}: not UTF-8 or UTF-16 text (byte {e.start}); save it as UTF-8 CSV") from None


def _fields(rec: dict, source: str, expected: int) -> dict:
    """A DictReader row, stripped; a row with more fields than the header is one line."""
    if None in rec:
        raise RealtimeError(f"{source}: {expected + len(rec[None])} fields where the header has {expected}; quote fields holding commas")
    return {(k or "").strip(): (v or "").strip() for k, v in rec.items()}


def _read_csv(path: Path, root: Path) -> LabelledSet:
    reader = csv.DictReader(text_lines(path))
    columns = {c.strip() for c in reader.fieldnames or []}
    if "file" not in columns or not ({"age", "age_group", "gender"} & columns):
        raise RealtimeError(f"{path}: needs a 'file' column and 'age', 'age_group' or 'gender' columns")
    rows, skipped, outside = [], 0, []
    inside = os.path.realpath(root)
    for line, rec in enumerate(reader, start=2):
        source = f"{path.name}:{line}"
        rec = _fields(rec, source, len(reader.fieldnames))
        file = root / rec["file"]
        if not file.is_file():
            skipped += 1
            continue
        if os.path.commonpath([inside, os.path.realpath(file)]) != inside:
            outside.append(rec["file"])
        group, years = parse_age(rec.get("age", ""), source)
        if group < 0 and rec.get("age_group", ""):
            group = _group_field(rec["age_group"], source)
        gender = gender_index(rec.get("gender", ""), source)
        race = int(rec["race"]) if rec.get("race", "").isdigit() else -1
        if group < 0 and gender < 0:
            skipped += 1
            continue
        rows.append((file, group, years, gender, race, -1, rec.get("group", "")))
    if outside:
        log.warning("%s: %d files listed are outside its folder %s (e.g. %s)", path, len(outside), root, outside[0])
    return LabelledSet.from_rows(rows, root, skipped)


def _group_field(value: str, source: str) -> int:
    if value in AGE_LABELS:
        return AGE_LABELS.index(value)
    if value.isdigit() and int(value) < len(AGE_LABELS):
        return int(value)
    group, _ = parse_age(value, source)
    return group


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) or f"{s}." in name for s in IMAGE_SUFFIXES)


def pair_sets(data, formats) -> tuple[tuple[Path, str], ...]:
    """``--data`` and ``--format`` (one each, or repeated and paired in order; one
    format may stand for every set) -> ((folder, format), ...)."""
    datas = [Path(d) for d in (data if isinstance(data, (list, tuple)) else [data])]
    fmts = list(formats) if isinstance(formats, (list, tuple)) else [formats]
    if len(fmts) == 1:
        fmts *= len(datas)
    if not datas or len(fmts) != len(datas):
        raise RealtimeError(f"give one --format for each --data (paired in order), or one for all: got {len(datas)} --data and {len(fmts)} --format")
    return tuple(zip(datas, fmts))


def load_sets(sets: tuple[tuple[Path, str], ...]) -> LabelledSet:
    """Several labelled sets read as one (``source`` says which each image came from).

    Each keeps its own split keys unchanged, so a set is split by its own key
    (UTKFace by capture, a CSV such as LFW by ``group``) exactly as when it is given
    alone: ``realtime eval --holdout`` on one set sees the faces a several-set run
    held out of it. Byte-identical images still go together across sets, and so do
    images of two sets that share a key (the same person in two CSV sets); official
    folds only count when every set has them."""
    parts = [load_dataset(root, fmt) for root, fmt in sets]
    if len(parts) == 1:
        return parts[0]
    for k, part in enumerate(parts):
        part.source = np.full(len(part), k, np.int64)
    arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in LabelledSet._ARRAYS}
    if not all((p.folds >= 0).all() for p in parts):
        arrays["folds"] = np.full(len(arrays["folds"]), -1, np.int64)
    files = [f for p in parts for f in p.files]
    return LabelledSet(files=files, root=parts[0].root, skipped=sum(p.skipped for p in parts), **arrays)


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
def read_images(data: LabelledSet, side: int | None = None, progress: Callable[[int], None] | None = None) -> tuple[LabelledSet, np.ndarray]:
    """Read every image into RAM as BGR uint8 ``(N, side, side, 3)``.

    Each image is taken whole as the crop square (as ``Cropper.crop_whole`` does:
    centred, replicated edges for non-square images) and resized to ``side``; ``None``
    keeps the first image's size. Unreadable files are skipped and counted in the
    returned set's ``skipped``."""
    keep, images = [], []
    for i, path in enumerate(data.files):
        try:
            image = read_image(path)
        except RealtimeError as e:
            log.warning("skipping %s", e)
            image = None
        if progress is not None:
            progress(1)
        if image is None:
            continue
        side = side or max(image.shape[:2])
        images.append(square(image, side))
        keep.append(i)
    subset = data[np.asarray(keep, np.int64)]
    subset.skipped = data.skipped + len(data) - len(keep)
    if not keep:
        raise RealtimeError(f"{data.root}: none of the {len(data)} images could be read")
    return subset, np.stack(images)


def square(image: np.ndarray, side: int) -> np.ndarray:
    """BGR (H, W, 3) -> (side, side, 3): the whole image centred in a square of its
    longer side, edges replicated, resized."""
    h, w = image.shape[:2]
    if h == w == side:
        return image
    return warp_square(image, w / 2, h / 2, max(h, w), side)
