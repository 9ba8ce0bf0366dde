import numpy as np
import pytest

from realtime.faces import Faces


def make_faces(boxes, scores=None, **kw) -> Faces:
    """Real Faces from lists (after supervision's mock_detections)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores if scores is not None else [0.9] * len(boxes), np.float32)
    return Faces(boxes, scores, **kw)


def test_empty_has_shapes_and_dtypes():
    f = Faces.empty(frame_index=7)
    assert len(f) == 0 and f.boxes.shape == (0, 4) and f.boxes.dtype == np.float32
    assert f.scores.shape == (0,) and f.frame_index == 7 and f.age_probs is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boxes": np.zeros((2, 3), np.float32), "scores": np.zeros(2, np.float32)}, "boxes must have shape"),
        ({"boxes": np.zeros((2, 4), np.float32), "scores": np.zeros(3, np.float32)}, "scores must have 2 rows"),
        ({"boxes": np.zeros((2, 4), np.float32), "scores": np.zeros(2, np.float32), "age_probs": np.zeros((1, 8))}, "age_probs must have 2 rows"),
    ],
)
def test_bad_shapes_fail_where_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Faces(**kwargs)


def test_mask_slices_every_field_together():
    f = make_faces([[0, 0, 10, 10], [5, 5, 30, 30], [1, 1, 2, 2]], [0.9, 0.4, 0.8], frame_index=3)
    f = f.with_predictions(np.eye(8, dtype=np.float32)[:3], np.eye(2, dtype=np.float32)[[0, 1, 0]], np.array([1, 2, 3], np.float32))
    kept = f[f.scores > 0.5]
    assert len(kept) == 2 and kept.frame_index == 3
    np.testing.assert_array_equal(kept.age_years, [1, 3])
    np.testing.assert_array_equal(kept.boxes[1], [1, 1, 2, 2])
    np.testing.assert_array_equal(kept.gender_probs.argmax(1), [0, 0])
    assert len(f[1]) == 1 and f[1].scores[0] == pytest.approx(0.4)
    assert f.age_probs is not kept.age_probs  # a new container, input untouched
    assert len(f) == 3


def test_areas():
    np.testing.assert_allclose(make_faces([[0, 0, 10, 20], [5, 5, 6, 6]]).areas, [200, 1])


def test_clipped_keeps_boxes_inside_and_drops_what_left_the_frame():
    f = make_faces([[-5, 10, 20, 30], [90, 90, 130, 130], [101, 5, 140, 40]], track_ids=np.array([1, 2, 3]))
    c = f.clipped(100, 100)
    assert c.track_ids.tolist() == [1, 2]
    np.testing.assert_array_equal(c.boxes, [[0, 10, 20, 30], [90, 90, 100, 100]])
