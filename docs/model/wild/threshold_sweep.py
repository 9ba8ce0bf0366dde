"""A diagnostic, not a way to choose a model: LFW hold-out balanced gender accuracy at
P(male) >= 0.5 and at the best threshold picked on the hold-out itself, to tell a lean
towards one gender (fixable by a threshold) from ranking errors (not fixable by one).

usage: python docs/model/wild/threshold_sweep.py LABELS.csv EVALS NAME [NAME ...]
  LABELS.csv: ../shared/data/lfw/labels.csv; EVALS: the folder of
  `realtime eval ... --predictions EVALS/NAME_lfw.csv` files (the LFW hold-out through the detector).
"""
import csv
import sys
from pathlib import Path

import numpy as np


def p_male(rows: list[dict]) -> np.ndarray:
    return np.array([float(r["gender_prob"]) if r["gender"] == "male" else 1 - float(r["gender_prob"]) for r in rows])


def balanced(pm: np.ndarray, male: np.ndarray, threshold: float) -> float:
    said = pm >= threshold
    return 0.5 * (said[male].mean() + (~said[~male]).mean())


def main(labels: str, evals: str, names: list[str]) -> None:
    truth = {r["file"]: r["gender"] for r in csv.DictReader(open(labels))}
    for name in names:
        rows = [r for r in csv.DictReader(open(Path(evals) / f"{name}_lfw.csv")) if r["gender"] and r["file"] in truth]
        pm, male = p_male(rows), np.array([truth[r["file"]] == "male" for r in rows])
        grid = np.linspace(0.05, 0.95, 181)
        scores = [balanced(pm, male, t) for t in grid]
        best = int(np.argmax(scores))
        print(f"{name}: {len(rows)} photos, balanced {100 * balanced(pm, male, 0.5):.2f}% at 0.5, "
              f"{100 * scores[best]:.2f}% at best (P(male) >= {grid[best]:.3f})")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
