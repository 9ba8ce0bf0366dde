"""Paired bootstrap, by person, of LFW balanced gender accuracy: each candidate minus a base model.

usage: python docs/model/wild/paired_lfw.py EVALS BASE CAND [CAND ...]
  EVALS: the folder of `realtime eval ... --predictions EVALS/NAME_lfw.csv` files (the
  LFW hold-out through the detector); BASE, CAND: their NAMEs. Persons are resampled
  (LFW is held out by person, and one person's photos are not independent), 2,000 times.
"""
import csv
import sys
from pathlib import Path

import numpy as np

LABELS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "lfw" / "labels.csv"


def predictions(evals: Path, name: str) -> dict[str, str]:
    return {r["file"].split("/")[-1].rsplit(".", 1)[0]: r["gender"] for r in csv.DictReader(open(evals / f"{name}_lfw.csv"))}


def balanced(right: np.ndarray, male: np.ndarray, weight: np.ndarray) -> float:
    return (np.sum(right * male * weight) / np.sum(male * weight) + np.sum(right * ~male * weight) / np.sum(~male * weight)) / 2


def main(evals: Path, base_name: str, names: list[str]) -> None:
    truth = {r["file"].split("/")[-1].rsplit(".", 1)[0]: (r["gender"], r["group"]) for r in csv.DictReader(open(LABELS))}
    base = predictions(evals, base_name)
    files = sorted(base)
    male = np.array([truth[f][0] == "male" for f in files])
    persons, person = np.unique([truth[f][1] for f in files], return_inverse=True)
    rng = np.random.default_rng(0)
    draws = [np.bincount(rng.integers(0, len(persons), len(persons)), minlength=len(persons))[person] for _ in range(2000)]
    a = np.array([base[f] == truth[f][0] for f in files])
    for name in names:
        cand = predictions(evals, name)
        b = np.array([cand[f] == truth[f][0] for f in files])
        diffs = [balanced(b, male, w) - balanced(a, male, w) for w in draws]
        one = np.ones(len(files))
        print(f"{name} - {base_name}: balanced {100 * (balanced(b, male, one) - balanced(a, male, one)):+.2f} "
              f"[{100 * np.percentile(diffs, 2.5):+.2f}, {100 * np.percentile(diffs, 97.5):+.2f}] points; "
              f"women {100 * (b[~male].mean() - a[~male].mean()):+.2f}, men {100 * (b[male].mean() - a[male].mean()):+.2f} "
              f"({len(files)} photos, {len(persons)} persons)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
