"""Reading a labelled face set from disk in one of its layouts: Adience, UTKFace, plain CSV.

:func:`load_dataset` reads one set, :func:`load_sets` several as one; each returns a
:class:`~train.data.LabelledSet` of labels only (pixels: :func:`train.data.read_images`).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from engines.crops import IMAGE_SUFFIXES
from engines.errors import RealtimeError
from engines.limits import LIMITS
from engines.meta import AGE_LABELS, GENDER_LABELS
from train.croprecord import RECORD, read_record
from train.data import LabelledSet
from train.labels import age_group_of, fields, gender_index, parse_age, text_lines

log = logging.getLogger(__name__)

FORMATS = ("adience", "utkface", "csv")
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
    record = read_record(root)
    if record is not None and "crop_scale" in record:  # a `realtime facecrops` set: its crops' framing
        data.framing[:] = _recorded_scale(record, root)
    log.info("%s (%s): %s", root, fmt, data.describe())
    return data


def _recorded_scale(record: dict, root: Path) -> float:
    """The ``crop_scale`` a set's record says its crops were cut at, checked against the one table of limits."""
    problem = LIMITS["crop_scale"].problem(record["crop_scale"])
    if problem:
        raise RealtimeError(f"{root}: its {RECORD} gives crop_scale {record['crop_scale']!r} ({problem}); recut the set or remove the file")
    return float(record["crop_scale"])


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
            rec = fields(rec, source, len(reader.fieldnames))
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


def _read_csv(path: Path, root: Path) -> LabelledSet:
    reader = csv.DictReader(text_lines(path))
    columns = {c.strip() for c in reader.fieldnames or []}
    if "file" not in columns or not ({"age", "age_group", "gender"} & columns):
        raise RealtimeError(f"{path}: needs a 'file' column and 'age', 'age_group' or 'gender' columns")
    rows, skipped, outside = [], 0, []
    inside = os.path.realpath(root)
    for line, rec in enumerate(reader, start=2):
        source = f"{path.name}:{line}"
        rec = fields(rec, source, len(reader.fieldnames))
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
