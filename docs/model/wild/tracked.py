"""The gender a *track* shows, as on video: each held-out photo played as a still clip of
FRAMES frames through the app's own Analyzer (detector, tracker, re-identification with
faceres and its second opinion, smoothing, hysteresis), then the label its largest face's
track shows on the last frame. Checks that the video path gives what `realtime eval
--second-opinion` scores per photo (faceres looks at a track when it is confirmed, its
3rd detection; the quality gates can keep it from looking).

usage: python docs/model/wild/tracked.py DATA FORMAT [--context C] [--frames 6] [--no-second-opinion] [--limit N]
  e.g. python docs/model/wild/tracked.py ../shared/data/lfw csv
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from engines.images import read_image  # noqa: E402
from realtime.analyzer import Analyzer, AnalyzerSettings  # noqa: E402
from realtime.reid import ReidSettings  # noqa: E402
from realtime.sources import Frame  # noqa: E402
from train.data import holdout_mask  # noqa: E402
from train.evaluate import in_context  # noqa: E402
from train.formats import load_dataset  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("format")
ap.add_argument("--context", type=float, default=1.0)
ap.add_argument("--frames", type=int, default=6)
ap.add_argument("--no-second-opinion", action="store_true")
ap.add_argument("--limit", type=int, default=None)
args = ap.parse_args()

data = load_dataset(args.data, args.format)
data = data[holdout_mask(data, 0.15) & (data.gender >= 0)]
if args.limit:
    data = data[np.arange(min(args.limit, len(data)))]
settings = AnalyzerSettings(backend="onnxruntime", reid=ReidSettings(second_opinion=not args.no_second_opinion))
said, looked, truth, ages = [], [], [], []
with Analyzer(settings) as analyzer:
    assert analyzer.reid is not None, "faceres not found: realtime models fetch --from ../shared/models"
    male = analyzer.meta.gender_labels.index("male")
    for k, path in enumerate(data.files):
        analyzer.restart()
        image = in_context(read_image(path), args.context)
        for i in range(args.frames):
            faces = analyzer.analyze([(0, Frame(image, i, i / 30))])[0]
        if not len(faces):
            continue
        j = int(np.argmax(faces.areas))
        track = next(t for t in analyzer.tracker(0).tracks if t.id == int(faces.track_ids[j]))
        said.append(int(faces.gender_class[j]) == male)
        looked.append(track.opinions > 0)
        truth.append(int(data.gender[k]) == male)
        ages.append((int(faces.age_class[j]), int(data.age_group[k]), float(faces.age_years[j]), float(data.age_years[k])))
        if k % 300 == 0:
            print(f"{k}/{len(data)}", file=sys.stderr)
said, looked, truth = map(np.array, (said, looked, truth))
women, men = (~said[~truth]).mean(), said[truth].mean()
print(f"{len(said)} tracks of {len(data)} photos ({args.frames} frames each, context {args.context}, "
      f"second opinion {'off' if args.no_second_opinion else 'on'}): faceres looked at {100 * looked.mean():.1f}%; "
      f"women {100 * women:.1f}% men {100 * men:.1f}% balanced {100 * (women + men) / 2:.2f}% all {100 * (said == truth).mean():.2f}%")
shown, group, years, known = (np.array(a) for a in zip(*ages))
if (group >= 0).any():  # the model's age groups are the sets' (Adience's) here
    g = group >= 0
    print(f"age group exact {100 * (shown[g] == group[g]).mean():.2f}% 1-off {100 * (abs(shown[g] - group[g]) <= 1).mean():.2f}% "
          f"MAE {np.nanmean(np.abs(years - known)):.2f}")
