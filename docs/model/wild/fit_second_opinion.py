"""Fit the second opinion's re-centring (realtime.opinion.FACERES_PLATT) on LFW photos of
the *training* persons (never the hold-out `realtime eval --holdout 0.15` scores): each
photo through the app's detector, faceres on its largest face at the re-identification
crop (FaceresEmbedder.look: 1.5x the box, 224 px, one view), then train.calibration.fit_platt.

usage: python docs/model/wild/fit_second_opinion.py ../shared/data/lfw [N=3000]
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from engines.images import read_image  # noqa: E402
from realtime.detector import FaceDetector  # noqa: E402
from realtime.embedders import FaceresEmbedder, find_faceres  # noqa: E402
from train.calibration import fit_platt, platt  # noqa: E402
from train.data import holdout_mask  # noqa: E402
from train.formats import load_dataset  # noqa: E402

data = load_dataset(sys.argv[1], "csv")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
train = np.flatnonzero(~holdout_mask(data, 0.15) & (data.gender >= 0))
pick = np.random.default_rng(0).choice(train, min(n, len(train)), replace=False)
detector, faceres = FaceDetector(), FaceresEmbedder(find_faceres(), threads=2)
male, truth = [], []
try:
    for k, i in enumerate(pick):
        image = read_image(data.files[i])
        faces = detector.detect(image)
        if not len(faces):
            continue
        male.append(faceres.look(image, faces.boxes[int(np.argmax(faces.areas))][None])[1][0])
        truth.append(int(data.gender[i] == 1))  # GENDER_LABELS: female, male
        if k % 500 == 0:
            print(f"{k}/{len(pick)}", file=sys.stderr)
finally:
    detector.close()
male, truth = np.array(male), np.array(truth)


def balanced(p):
    return 100 * ((p[truth == 0] < 0.5).mean() + (p[truth == 1] >= 0.5).mean()) / 2


a, b = fit_platt(male, truth)
print(f"{len(male)} faces of {len(pick)} photos: faceres raw balanced {balanced(male):.2f}%; "
      f"re-centred {balanced(platt(male, a, b)):.2f}%; FACERES_PLATT = ({a:.4f}, {b:.4f})")
