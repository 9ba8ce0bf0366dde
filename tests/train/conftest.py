"""Fixtures: small face sets written in Adience's and UTKFace's published layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import pytest

from tests.helpers import face_image

#: ../shared beside the repository root (tests/train/conftest.py -> parents[2] is the root).
SHARED = (Path(__file__).parents[2] / ".." / "shared").resolve()
UTKFACE = SHARED / "data" / "utkface"

ADIENCE_HEADER = [
    "user_id", "original_image", "face_id", "age", "gender", "x", "y", "dx", "dy",
    "tilt_ang", "fiducial_yaw_angle", "fiducial_score",
]  # fmt: skip


@pytest.fixture
def adience_dir(tmp_path: Path) -> Path:
    """Adience layout: 5 official folds, 2 subjects each, 3 faces per subject.

    Deliberate oddities: one listed image is missing on disk, one face has gender 'u',
    one age 'None', one the odd range '(8, 23)', one an exact '35', one in aligned/."""
    root = tmp_path / "adience"
    ages = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"]
    n = 0
    for fold in range(5):
        rows = []
        for subject in range(2):
            user = f"user{fold}{subject}@N0{fold}"
            for face in range(3):
                n += 1
                original = f"{1000 + n}_{face}.jpg"
                face_id = str(n)
                age, gender = ages[n % 8], "mf"[n % 2]
                folder, prefix = "faces", "coarse_tilt_aligned_face"
                if n == 2:
                    gender = "u"
                if n == 3:
                    age = "None"
                if n == 4:
                    age = "(8, 23)"
                if n == 5:
                    age = "35"
                if n == 6:
                    folder, prefix = "aligned", "landmark_aligned_face"
                rows.append([user, original, face_id, age, gender, "1", "2", "30", "30", "0", "0", "50"])
                if n == 7:
                    continue  # listed but missing on disk
                path = root / folder / user / f"{prefix}.{face_id}.{original}"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), face_image(n, 48))
        with open(root / f"fold_{fold}_data.txt", "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t")
            writer.writerow(ADIENCE_HEADER)
            writer.writerows(rows)
    return root


@pytest.fixture
def utk_dir(tmp_path: Path) -> Path:
    """UTKFace file naming: ``age_gender_race_date.jpg.chip.jpg``; 24 faces, a duplicate
    pair with different labels, one unparseable name, one corrupt file."""
    root = tmp_path / "utk"
    root.mkdir()
    for i in range(24):
        age, gender, race = [2, 5, 10, 18, 28, 40, 50, 70][i % 8], i % 2, i % 5
        cv2.imwrite(str(root / f"{age}_{gender}_{race}_2017010{i:04d}.jpg.chip.jpg"), face_image(100 + i, 40))
    (root / "31_1_0_20170109999999.jpg.chip.jpg").write_bytes((root / "28_0_4_20170100004.jpg.chip.jpg").read_bytes())
    cv2.imwrite(str(root / "noage_face.jpg"), face_image(7, 40))
    (root / "44_0_1_20170108888888.jpg.chip.jpg").write_bytes(b"not a jpeg")
    return root


#: 12 named UTKFace faces: every age group, both genders, all five race codes. Named,
#: not sampled, so the pick does not change when the set grows or is reordered.
SHARED_FACE_FILES = (
    "31_0_1_20170116235513414", "2_1_4_20161221201717930", "54_1_0_20170109010202728",
    "60_1_0_20170110141612400", "37_1_0_20170117140054979", "40_0_0_20170117203219447",
    "71_0_0_20170104213443413", "29_1_3_20170104232728113", "54_0_3_20170119210124368",
    "18_1_0_20170109213414723", "4_1_0_20161219160558133", "22_1_2_20170116162944219",
)  # fmt: skip


@pytest.fixture
def shared_faces(tmp_path: Path) -> Path:
    """A labels.csv over the 12 real UTKFace faces of ``SHARED_FACE_FILES`` from
    ../shared (skips when absent)."""
    if not (UTKFACE / "labels.csv").is_file():
        pytest.skip(f"real faces not available: {UTKFACE} is absent (../shared beside the checkout)")
    with open(UTKFACE / "labels.csv", newline="") as fh:
        rows = {Path(r["file"]).name.split(".")[0]: r for r in csv.DictReader(fh)}
    missing = [name for name in SHARED_FACE_FILES if name not in rows]
    if missing:
        pytest.skip(f"{UTKFACE} lacks the named test faces {missing[:3]}")
    root = tmp_path / "faces"
    root.mkdir()
    with open(root / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(next(iter(rows.values()))))
        writer.writeheader()
        for name in SHARED_FACE_FILES:
            writer.writerow({**rows[name], "file": str((UTKFACE / rows[name]["file"]).resolve())})
    return root
