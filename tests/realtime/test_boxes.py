import numpy as np

from realtime.boxes import nms, tile_grid


def test_nms_keeps_the_best_of_overlapping_boxes_and_drops_cut_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 5, 10]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95], np.float32)
    # box 3 (a face cut in half by a tile edge) lies inside box 1's area
    assert nms(boxes, scores).tolist() == [3, 2]
    assert nms(boxes[:3], scores[:3]).tolist() == [1, 2]


def test_tile_grid_covers_the_frame_with_overlap():
    tiles = tile_grid(1920, 1080, 3, 2, overlap=0.2)
    assert len(tiles) == 6
    assert min(t[0] for t in tiles) == 0 and max(t[2] for t in tiles) == 1920
    assert min(t[1] for t in tiles) == 0 and max(t[3] for t in tiles) == 1080
    (a, b) = tiles[0], tiles[1]
    assert b[0] < a[2]  # neighbours overlap
