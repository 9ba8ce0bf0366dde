"""Detector crops of a labelled photo set, written once as a CSV set of face chips.

The app never sees an aligned chip: it sees the square its detector and cropper cut out
of a frame. ``write_face_crops`` runs that path (the app's MediaPipe detector with its
tiling, the largest face of each photo, ``Cropper`` framing at ``crop_scale``) over a
set such as LFW and writes each crop with the photo's labels and split key, so the
result trains and evaluates like any ``--format csv`` set and splits exactly as the
photos do (LFW: by person)::

    realtime facecrops --data ../shared/data/lfw --format csv --out /tmp/lfw_crops
    realtime train --data /tmp/utk128 --format utkface --data /tmp/lfw_crops --format csv ...

Photos with no detected face are left out (the app would not classify them either) and
counted. Nothing is written over the source set: ``out`` must be a new or empty folder,
and it appears only once complete (the crops are cut into a hidden folder beside it,
renamed at the end, and removed on Ctrl-C or any error).

With ``level_eyes`` each crop is also turned so that the detector's eyes are level,
in the same one warp, exactly as the app's ``Cropper(meta, level_eyes=True)`` cuts
it (faces without plausible eyes stay upright); ``facecrops.json`` beside
``labels.csv`` records how the set was cut (:mod:`train.croprecord`), so that
``realtime train`` gives a model trained on it ``level_eyes`` in its meta. Without
``level_eyes`` the crops are byte for byte those of before.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import cv2
import numpy as np

from engines.crops import Cropper
from engines.images import read_image
from engines.limits import check_fields
from engines.meta import AGE_LABELS, GENDER_LABELS, ModelMeta
from engines.writes import write_atomic
from realtime.errors import RealtimeError
from train.croprecord import write_record
from train.formats import load_dataset

log = logging.getLogger(__name__)


@dataclass
class FaceCropSettings:
    """What :func:`write_face_crops` cuts.

    Attributes:
        data, format: the labelled photo set (any loader format).
        out: a new or empty folder: ``labels.csv`` and ``images/`` are written there.
        side: pixels of each written crop (square).
        crop_scale: crop side / detector box side (the app's default framing is 1.15).
        detector_range: the MediaPipe model, ``full`` or ``short``.
        min_score: detector confidence threshold.
        quality: WebP quality of the written crops.
        level_eyes: turn each crop so the detector's eyes are level (see
            :class:`engines.crops.Cropper`).
    """

    data: Path
    format: str = "csv"
    out: Path = Path("crops")
    side: int = 128
    crop_scale: float = 1.15
    detector_range: str = "full"
    min_score: float = 0.5
    quality: int = 90
    level_eyes: bool = False

    def __post_init__(self) -> None:
        check_fields(self)  # the one table of limits: side, crop_scale, min_score
        self.data, self.out = Path(self.data), Path(self.out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise RealtimeError(f"--out {self.out}: give a new or empty folder (nothing is written over files)")
        if self.out.resolve() == self.data.resolve() or self.data.resolve() in self.out.resolve().parents:
            raise RealtimeError(f"--out {self.out} is inside the source set {self.data}; give a folder outside it")


def write_face_crops(settings: FaceCropSettings, progress: Callable[[int, str], ContextManager] | None = None) -> dict:
    """Cut the largest detected face of every photo of ``settings.data`` into
    ``settings.out`` (WebP chips + ``labels.csv`` with ``file,age,gender,group``).

    ``facecrops.json`` records how (``level_eyes``, side, framing, detector, counts).
    Returns counts: ``written``, ``levelled`` (crops turned by their eyes),
    ``no_face``, ``unreadable``."""
    from train.trainer import _null_progress

    progress = progress or _null_progress
    data = load_dataset(settings.data, settings.format)
    out = settings.out
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"  # renamed to ``out`` once whole
    images = partial / "images"
    images.mkdir(parents=True)
    try:
        counts = _cut_all(settings, data, partial, progress)
        write_record(partial, {"level_eyes": settings.level_eyes, "side": settings.side, "crop_scale": settings.crop_scale,
                               "detector_range": settings.detector_range, "min_score": settings.min_score, **counts})
        if out.exists():
            out.rmdir()  # the new or empty folder the settings accepted
        partial.rename(out)
    except BaseException:  # Ctrl-C, a full disk, a bad image: nothing half-written is left
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("%s: %d crops written, %d photos without a face, %d unreadable", out, counts["written"], counts["no_face"], counts["unreadable"])
    return counts


def _cut_all(settings: FaceCropSettings, data, partial: Path, progress) -> dict:
    """Cut every photo of ``data`` into ``partial`` (images/ and labels.csv): the counts."""
    from realtime.detector import FaceDetector

    images = partial / "images"
    names = data.names()
    cropper = Cropper(ModelMeta(input_size=settings.side, crop_scale=settings.crop_scale), level_eyes=settings.level_eyes)
    rows, counts = [], {"written": 0, "levelled": 0, "no_face": 0, "unreadable": 0}
    with FaceDetector(None, settings.detector_range, settings.min_score) as detector, progress(len(data), "cropping") as bar:
        for i, path in enumerate(data.files):
            bar.update(1)
            try:
                image = read_image(path)
            except RealtimeError as e:
                log.warning("skipping %s", e)
                counts["unreadable"] += 1
                continue
            faces = detector.detect(image)
            if len(faces) == 0:
                counts["no_face"] += 1
                continue
            face = faces[int(np.argmax(faces.areas))]
            chip = cropper.cut(image, face)[0][..., ::-1]  # RGB -> BGR to encode
            counts["levelled"] += int(cropper.angles(face.boxes, face.eyes)[0] != 0)
            name = Path(names[i]).with_suffix(".webp").as_posix().removeprefix("images/").replace("/", "__")
            ok, encoded = cv2.imencode(".webp", chip, [cv2.IMWRITE_WEBP_QUALITY, settings.quality])
            if not ok:
                raise RealtimeError(f"could not encode the crop of {path}")
            write_atomic(images / name, encoded.tobytes())
            rows.append(_label_row(f"images/{name}", data, i))
            counts["written"] += 1
    if not rows:
        raise RealtimeError(f"{settings.data}: no face found in any of its {len(data)} images")
    _write_labels(partial / "labels.csv", rows)
    return counts


def _label_row(name: str, data, i: int) -> list[str]:
    """``file,age,gender,group`` for image ``i`` of ``data``: the exact age where known,
    else its age group's label, else empty."""
    if np.isfinite(data.age_years[i]):
        age = f"{float(data.age_years[i]):g}"
    elif data.age_group[i] >= 0:
        age = AGE_LABELS[int(data.age_group[i])]
    else:
        age = ""
    gender = GENDER_LABELS[int(data.gender[i])] if data.gender[i] >= 0 else ""
    return [name, age, gender, str(data.groups[i])]


def _write_labels(path: Path, rows: list[list[str]]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "age", "gender", "group"])
    writer.writerows(rows)
    write_atomic(path, buf.getvalue().encode())
