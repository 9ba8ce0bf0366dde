"""Face-identity embedders on LFW pairs, as the app sees faces (through the detector).

    python -m train.reid_pairs --lfw ../shared/data/lfw --embedder dlib --embedder faceres.onnx

Pairs of photos of one person and of two people are drawn from LFW (``labels.csv``:
``group`` is the person), the people split in two halves: the cosine-similarity
threshold is chosen on one half (best accuracy) and the accuracy, the false-match rate
(two people taken for one: an undercount) and the miss rate (one person taken for two:
an overcount) reported on the other. Each photo goes through the app's face detector
(the detection nearest the centre; the centred half of the photo where none is found),
so the boxes are the app's. Also the embedder's cost in ms per face (this process,
one thread), and how many photos' faces the app's quality gate would not embed
(``below_contrast``: :func:`realtime.reid.contrast` under ``ReidSettings.min_contrast``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import zlib
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from realtime.detector import FaceDetector
from realtime.embedders import create_embedder
from realtime.reid import ReidSettings, contrast


def draw_pairs(groups: dict[str, list[str]], n: int, rng: np.random.Generator) -> list[tuple[str, str, bool]]:
    """``n`` same-person pairs (people with 2+ photos) and ``n`` two-person pairs."""
    multi = sorted(g for g, files in groups.items() if len(files) >= 2)
    people = sorted(groups)
    pairs = []
    for _ in range(n):
        files = groups[multi[rng.integers(len(multi))]]
        a, b = rng.choice(len(files), 2, replace=False)
        pairs.append((files[a], files[b], True))
    for _ in range(n):
        a, b = rng.choice(len(people), 2, replace=False)
        ga, gb = groups[people[a]], groups[people[b]]
        pairs.append((ga[rng.integers(len(ga))], gb[rng.integers(len(gb))], False))
    return pairs


def best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """The similarity threshold with the best pair accuracy (midway between neighbours)."""
    order = np.sort(np.unique(sims))
    cuts = np.concatenate([[order[0] - 1e-3], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-3]])
    acc = [((sims >= c) == same).mean() for c in cuts]
    return float(cuts[int(np.argmax(acc))])


def rates(pred: np.ndarray, same: np.ndarray) -> dict:
    """Pair accuracy, false-match rate (two people taken for one) and miss rate."""
    return {"test_accuracy": round(float((pred == same).mean()), 4),
            "false_match_rate": round(float(pred[~same].mean()), 4),
            "miss_rate": round(float((~pred[same]).mean()), 4)}


def centre_box(image: np.ndarray, detector: FaceDetector) -> tuple[np.ndarray, bool]:
    h, w = image.shape[:2]
    faces = detector.detect(image, 0)
    if not len(faces):
        return np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4], np.float32), False
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    return faces.boxes[int(np.argmin(np.linalg.norm(centres - [w / 2, h / 2], axis=1)))], True


def evaluate(lfw: Path, embedders: list[str], pairs_per_kind: int, seed: int = 0) -> dict:
    rows = list(csv.DictReader(open(lfw / "labels.csv")))
    halves: list[dict[str, list[str]]] = [defaultdict(list), defaultdict(list)]
    for r in rows:  # split by person, never by file
        halves[zlib.crc32(r["group"].encode()) % 2][r["group"]].append(r["file"])
    rng = np.random.default_rng(seed)
    fit, test = (draw_pairs(h, pairs_per_kind, rng) for h in halves)
    files = sorted({f for a, b, _ in fit + test for f in (a, b)})
    detector = FaceDetector(range="full", tiles="off")
    boxes, found, dim = {}, 0, 0
    for f in files:
        image = cv2.imread(str(lfw / f))
        boxes[f], hit = centre_box(image, detector)
        found += hit
        dim += contrast(image, boxes[f]) < ReidSettings().min_contrast
    detector.close()
    report = {"pairs_per_kind": pairs_per_kind, "photos": len(files), "detected": found, "below_contrast": dim}
    for spec in embedders:
        embedder = create_embedder(spec)
        vecs, seconds = {}, 0.0
        for f in files:
            image = cv2.imread(str(lfw / f))
            start = time.perf_counter()
            vecs[f] = embedder.embed(image, boxes[f][None])[0]
            seconds += time.perf_counter() - start

        def sims(pairs):
            return np.array([float(vecs[a] @ vecs[b]) for a, b, _ in pairs]), np.array([s for _, _, s in pairs])

        s_fit, y_fit = sims(fit)
        s_test, y_test = sims(test)
        t = best_threshold(s_fit, y_fit)
        report[embedder.name] = {
            "threshold": round(t, 4), **rates(s_test >= t, y_test),
            "fit_accuracy": round(float(((s_fit >= t) == y_fit).mean()), 4),
            "shipped_threshold": embedder.threshold, "at_shipped": rates(s_test >= embedder.threshold, y_test),
            "ms_per_face": round(1000 * seconds / len(files), 2),
        }
        print(embedder.name, report[embedder.name], flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    p.add_argument("--embedder", action="append", help="dlib, or a path to hse_faceres.onnx (repeat to compare)")
    p.add_argument("--pairs", type=int, default=300, help="pairs of each kind (same, different) per half")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)
    report = evaluate(args.lfw, args.embedder or ["dlib"], args.pairs)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
