"""faceres' own gender on LFW photos through the app's detector, by how the face is framed for it:
the 1.15x app crop padded to 1.5x with replicated edges (what `realtime teach` gave it before),
the photo's own 1.5x and 1.3x, the 1.5x levelled by the eyes, each alone and averaged with its mirror;
raw and re-centred (Platt, both genders weighted equally) on a sample of the training persons' photos.

usage: python docs/model/wild/teacher_framing.py LFW_DIR FACERES.onnx [TRAIN_SAMPLE]
  e.g. python docs/model/wild/teacher_framing.py ../shared/data/lfw ../shared/models/teachers/hse_faceres.onnx 3000
(the hold-out is `realtime eval --holdout 0.15`'s; about 4 min for it and 10 for 3,000 training photos on 2 cores)
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from engines.crops import Cropper, warp_square  # noqa: E402
from engines.images import read_image  # noqa: E402
from engines.meta import ModelMeta  # noqa: E402
from realtime.detector import FaceDetector  # noqa: E402
from train.calibration import fit_platt, platt  # noqa: E402
from train.data import holdout_mask  # noqa: E402
from train.formats import load_dataset  # noqa: E402
from train.teach import _Faceres  # noqa: E402

VIEWS = ("padded 1.15x", "own 1.5x", "own 1.3x", "levelled 1.5x")


def p_male(net: _Faceres, data, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, views, 2) P(male) of each photo with a face (view alone, mirrored) and their genders."""
    app, level = Cropper(ModelMeta(input_size=128, crop_scale=1.15)), Cropper(ModelMeta(input_size=224, crop_scale=1.5), level_eyes=True, deadband=0.0)
    out, kept = [], []
    with FaceDetector(None, "full", 0.5) as detector:
        for i in index:
            image = read_image(data.files[i])
            faces = detector.detect(image)
            if len(faces) == 0:
                continue
            face = faces[int(np.argmax(faces.areas))]
            (cx, cy, side), = app.squares(face.boxes) / np.array([1, 1, 1.15], np.float32)  # the box's centre and side
            views = [net.view(np.ascontiguousarray(app.cut(image, face)[0][..., ::-1])),
                     warp_square(image, cx, cy, side * 1.5, 224), warp_square(image, cx, cy, side * 1.3, 224),
                     np.ascontiguousarray(level.cut(image, face)[0][..., ::-1])]
            batch = np.stack(views + [v[:, ::-1] for v in views])
            out.append(net(np.ascontiguousarray(batch))[0].reshape(2, len(VIEWS)).T)
            kept.append(i)
    return np.array(out), data.gender[kept]


def balanced(p: np.ndarray, gender: np.ndarray) -> str:
    women, men = (p[gender == 0] < 0.5).mean(), (p[gender == 1] >= 0.5).mean()
    return f"women {100 * women:.1f}% men {100 * men:.1f}% balanced {100 * (women + men) / 2:.2f}%"


data = load_dataset(sys.argv[1], "csv")
net = _Faceres(Path(sys.argv[2]), 2)
held = holdout_mask(data, 0.15)
sample = np.random.default_rng(0).choice(np.flatnonzero(~held), int(sys.argv[3]) if len(sys.argv) > 3 else 3000, replace=False)
test, test_gender = p_male(net, data, np.flatnonzero(held))
fit, fit_gender = p_male(net, data, sample)
for k, name in enumerate(VIEWS):
    for mirrored in (False, True):
        p, q = (test[:, k].mean(1), fit[:, k].mean(1)) if mirrored else (test[:, k, 0], fit[:, k, 0])
        a, b = fit_platt(q, fit_gender.astype(int))
        print(f"{name}{' + mirror' if mirrored else ''}: raw {balanced(p, test_gender)}; re-centred {balanced(platt(p, a, b), test_gender)}")
