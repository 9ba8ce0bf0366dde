import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.errors import RealtimeError
from train.data import holdout_mask
from train.formats import load_dataset
from train.shrink import shrink


def labelled(root: Path) -> Path:
    """A labels.csv set of 200 px faces (UTKFace names), one byte-identical pair, one unreadable file."""
    from tests.helpers import face_image

    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(10):
        name = f"images/{20 + i}_{i % 2}_0_2017011{i:07d}.jpg.chip.jpg"
        cv2.imwrite(str(root / name), face_image(i, 200))
        rows.append({"file": name, "age": 20 + i, "gender": "mf"[i % 2], "race": 0})
    twin = "images/33_0_0_20170119999999.jpg.chip.jpg"
    (root / twin).write_bytes((root / rows[0]["file"]).read_bytes())
    rows.append({"file": twin, "age": 33, "gender": "m", "race": 0})
    (root / "images/40_0_0_20170118888888.jpg.chip.jpg").write_bytes(b"not a jpeg")
    rows.append({"file": "images/40_0_0_20170118888888.jpg.chip.jpg", "age": 40, "gender": "m", "race": 0})
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "age", "gender", "race"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_shrunk_copy_keeps_labels_and_split(tmp_path):
    src = labelled(tmp_path / "src")
    assert shrink(src, tmp_path / "small", side=64, quality=80, workers=1) == 11  # the unreadable one is dropped
    a, b = load_dataset(src, "utkface"), load_dataset(tmp_path / "small", "utkface")
    assert len(b) == 11 and all(str(f).endswith(".jpg.chip.jpg.webp") for f in b.files)
    image = cv2.imread(str(b.files[0]))
    assert image.shape == (64, 64, 3)
    assert np.abs(image.astype(int) - cv2.resize(cv2.imread(str(a.files[0])), (64, 64), interpolation=cv2.INTER_AREA)).mean() < 8
    readable = np.array([not str(f).startswith(str(src / "images/40_")) for f in a.files])
    assert (a.age_years[readable] == b.age_years).all() and (a.gender[readable] == b.gender).all()
    assert (holdout_mask(a, 0.3)[readable] == holdout_mask(b, 0.3)).all()
    keys = b.split_keys()
    assert keys[0] == keys[-1]  # the byte-identical pair still shares one key


def test_shrink_refuses_what_it_cannot_do(tmp_path):
    src = labelled(tmp_path / "src")
    with pytest.raises(RealtimeError, match="no labels.csv"):
        shrink(tmp_path / "src" / "images", tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(RealtimeError, match="not empty"):
        shrink(src, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
