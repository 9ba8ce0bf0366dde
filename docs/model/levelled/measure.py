"""How level the eyes of `realtime facecrops` crops are, with and without --level-eyes,
on LFW photos turned +-20 degrees in turn (the measure of tests/train/test_levelled.py
on more photos). Run from the repository root, ../shared beside it:

    PYTHONPATH=$PWD REALTIME_MODELS=../shared/models python docs/model/levelled/measure.py --photos 60 --work /tmp/lvl_measure
"""

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np

from tests.helpers import SHARED
from tests.train.test_levelled import TURN, crop_tilts, turned_set
from train.facecrops import FaceCropSettings, write_face_crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--work", type=Path, required=True, help="A scratch folder (emptied first).")
    a = parser.parse_args()
    lfw = SHARED / "data" / "lfw"
    shutil.rmtree(a.work, ignore_errors=True)
    rows = list(csv.DictReader(open(lfw / "labels.csv")))
    rows = rows[:: max(1, len(rows) // a.photos)][: a.photos]
    turned_set(lfw, a.work / "turned", rows)
    tilts = {}
    for name, level in (("plain", False), ("level", True)):
        counts = write_face_crops(FaceCropSettings(a.work / "turned", "csv", a.work / name, level_eyes=level))
        tilts[name] = crop_tilts(a.work / name)
        print(f"{name}: {counts}")
    found = np.isfinite(tilts["plain"]) & np.isfinite(tilts["level"])
    plain, level = np.abs(tilts["plain"][found]), np.abs(tilts["level"][found])
    print(f"{found.sum()} of {len(rows)} photos turned {TURN:g} degrees, the eye line measured on their crops:")
    for name, t in (("without --level-eyes", plain), ("with --level-eyes", level)):
        print(f"  {name}: median {np.median(t):.1f} degrees, 90th percentile {np.percentile(t, 90):.1f}, within 10 degrees {100 * np.mean(t < 10):.0f}%")
    print(f"  levelled crop nearer level than the plain one: {100 * np.mean(level < plain):.0f}%")


if __name__ == "__main__":
    main()
