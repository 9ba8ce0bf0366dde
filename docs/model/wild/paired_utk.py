"""Paired bootstrap of the UTKFace hold-out figures (age exact, 1-off, gender 13+, MAE): each candidate minus a base.

usage: python docs/model/wild/paired_utk.py EVALS BASE CAND [CAND ...]
  EVALS: the folder of `realtime eval ... --cropped --predictions EVALS/NAME_utk.csv` files.
  Capture keys (UTKFace's split key: a photo's faces) are resampled, 2,000 times.
"""
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from engines.meta import AGE_LABELS  # noqa: E402
from train.ages import AgeScheme  # noqa: E402
from train.formats import utkface_capture_key  # noqa: E402

LABELS = ROOT.parent / "shared" / "data" / "utkface" / "labels.csv"


def figures(pred: dict, truth: dict, files: list[str], scheme: AgeScheme):
    group = scheme.group_of(np.array([truth[f][0] for f in files], np.float64))
    said = np.array([AGE_LABELS.index(pred[f][0]) for f in files])
    years = np.array([pred[f][1] for f in files])
    adult = np.array([truth[f][0] >= 13 for f in files])
    gender = np.array([pred[f][2] == truth[f][1] for f in files])
    return said == group, np.abs(said - group) <= 1, gender, adult, np.abs(years - np.array([truth[f][0] for f in files]))


def load(evals: Path, name: str) -> dict:
    return {r["file"]: (r["age_group"], float(r["age"]), r["gender"]) for r in csv.DictReader(open(evals / f"{name}_utk.csv"))}


def main(evals: Path, base_name: str, names: list[str]) -> None:
    truth = {r["file"]: (float(r["age"]), r["gender"]) for r in csv.DictReader(open(LABELS))}
    scheme = AgeScheme.from_labels(AGE_LABELS)
    base = load(evals, base_name)
    files = sorted(base)
    keys, key = np.unique([utkface_capture_key(Path(f)) for f in files], return_inverse=True)
    rng = np.random.default_rng(0)
    draws = [np.bincount(rng.integers(0, len(keys), len(keys)), minlength=len(keys))[key] for _ in range(2000)]
    ea, oa, ga, adult, ma = figures(base, truth, files, scheme)
    for name in names:
        eb, ob, gb, _, mb = figures(load(evals, name), truth, files, scheme)
        parts = []
        for label, a, b, mask, scale in (("exact", ea, eb, None, 100), ("1-off", oa, ob, None, 100),
                                         ("gender 13+", ga, gb, adult, 100), ("MAE", ma, mb, None, 1)):
            m = np.ones(len(files), bool) if mask is None else mask
            diff = lambda w: (np.sum(b * w * m) - np.sum(a * w * m)) / np.sum(w * m) * scale  # noqa: E731
            d = [diff(w) for w in draws]
            parts.append(f"{label} {diff(np.ones(len(files))):+.2f} [{np.percentile(d, 2.5):+.2f}, {np.percentile(d, 97.5):+.2f}]")
        print(f"{name} - {base_name}: " + "; ".join(parts) + f" ({len(files)} faces, {len(keys)} captures)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
