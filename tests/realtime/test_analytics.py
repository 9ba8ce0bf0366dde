import json

import numpy as np
import pytest
from click.testing import CliRunner

from engines.meta import ModelMeta
from realtime.analytics import Analytics
from realtime.cli import cli
from realtime.faces import Faces
from realtime.sources import Frame
from tests.helpers import SAMPLES


def tracked(ids, ages, genders, predicted=None):
    n = len(ids)
    boxes = np.tile(np.array([0, 0, 50, 50], np.float32), (n, 1))
    return Faces(boxes, np.full(n, 0.9, np.float32), age_probs=np.eye(8, dtype=np.float32)[ages],
                 gender_probs=np.eye(2, dtype=np.float32)[genders], age_years=np.full(n, 30, np.float32),
                 track_ids=np.array(ids, np.int64), predicted=np.array(predicted or [False] * n))


def test_counts_people_dwell_and_flicker():
    a = Analytics(ModelMeta(), min_frames=3, frame_seconds=0.1)
    frame = lambda i: Frame(np.zeros((4, 4, 3), np.uint8), i, i * 0.1)  # noqa: E731
    # track 1: 10 frames as 25-32 female, one flicker to male at frame 5 and back
    # track 2: 4 frames as 60-100 male (last one coasting); track 3: a 1-frame blip
    for i in range(10):
        ids, ages, genders, pred = [1], [4], [1 if i == 5 else 0], [False]
        if 2 <= i < 6:
            ids, ages, genders, pred = ids + [2], ages + [7], genders + [1], pred + [i == 5]
        if i == 8:
            ids, ages, genders, pred = ids + [3], ages + [0], genders + [0], pred + [False]
        a.write(frame(i), tracked(ids, ages, genders, pred))
    s = a.summary()
    assert s["people"] == 2 and s["frames"] == 10 and s["seconds"] == pytest.approx(1.0)
    assert s["by_age_group_and_gender"] == {"25-32 female": 1, "60-100 male": 1}
    assert s["by_gender"] == {"female": 1, "male": 1} and s["by_age_group"]["60-100"] == 1
    assert s["dwell_seconds"]["max"] == pytest.approx(1.0) and s["dwell_seconds"]["median"] == pytest.approx(0.7)
    assert s["faces_per_minute"] == pytest.approx((10 + 3 + 1) / (1 / 60))  # coasting boxes are not detections
    assert s["flicker"]["label_changes"] == 2 and s["flicker"]["track_seconds"] == pytest.approx(1.5)
    assert [t["counted"] for t in s["tracks"]] == [True, True, False]
    assert "2 people" in a.line()


def test_summary_file_from_the_cli(tmp_path, detector_models):
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(cli, ["annotate", str(SAMPLES / "people.mp4"), "-o", str(tmp_path / "o.mp4"),
                                      "--json", str(tmp_path / "r.jsonl"), "--summary", str(out)])
    assert result.exit_code == 0, result.output
    s = json.loads(out.read_text())
    assert s["people"] == 2 and s["frames"] == 75  # the two portraits, each one track
    assert "2 people" in result.stdout
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    ids = {f["track_id"] for r in records for f in r["faces"]}
    assert {t["track_id"] for t in s["tracks"] if t["counted"]} <= ids
    assert all(isinstance(f["predicted"], bool) for r in records for f in r["faces"])
