"""The teachers' own gender on a set's hold-out (the faces `realtime eval --holdout 0.15` scores),
raw and re-centred as `train --calibrate-teachers` does (the fit on that set's training faces).

usage: python docs/model/wild/teacher_ceiling.py CACHE.npz SET_DIR FORMAT
  e.g. python docs/model/wild/teacher_ceiling.py teachers.npz lfw_crops csv
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from engines.meta import AGE_LABELS, GENDER_LABELS  # noqa: E402
from train.calibration import fit_platt, platt  # noqa: E402
from train.data import holdout_mask  # noqa: E402
from train.formats import load_dataset  # noqa: E402
from train.teach import TeacherCache  # noqa: E402


def balanced(p_male: np.ndarray, gender: np.ndarray) -> str:
    women, men = (p_male[gender != cache.male] < 0.5).mean(), (p_male[gender == cache.male] >= 0.5).mean()
    return f"women {100 * women:.1f}% men {100 * men:.1f}% balanced {100 * (women + men) / 2:.2f}%"


cache = TeacherCache(Path(sys.argv[1]), AGE_LABELS, GENDER_LABELS)
data = load_dataset(sys.argv[2], sys.argv[3])
rows, held = cache.rows(data.content_keys()), holdout_mask(data, 0.15)
raw = {"faceres": cache.faceres_gender[:, cache.male], "ours": cache.ours[1][:, cache.male]}
known = data.gender >= 0

for name, p in raw.items():
    a, b = fit_platt(p[rows[~held & known]], (data.gender[~held & known] == cache.male).astype(int))
    test = rows[held & known]
    print(f"{name}: raw {balanced(p[test], data.gender[held & known])}; re-centred {balanced(platt(p[test], a, b), data.gender[held & known])}")
