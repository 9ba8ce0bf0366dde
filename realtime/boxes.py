"""Box geometry on (N, 4) float32 xyxy arrays."""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy boxes -> (N, M) float32 intersection over union."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.4) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first.

    Also drops a box mostly inside a better one (intersection over the smaller box >
    0.6): a face cut by a tile edge next to the whole face."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    for i in order:
        if keep:
            k = np.asarray(keep)
            lt = np.maximum(boxes[k, :2], boxes[i, :2])
            rb = np.minimum(boxes[k, 2:], boxes[i, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
            union = areas[k] + areas[i] - inter
            if (inter / np.maximum(union, 1e-6) > iou).any() or (inter / np.maximum(np.minimum(areas[k], areas[i]), 1e-6) > 0.6).any():
                continue
        keep.append(int(i))
    return np.asarray(keep, np.int64)


def tile_grid(width: int, height: int, cols: int, rows: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """``cols`` x ``rows`` overlapping tiles covering a frame, as (x1, y1, x2, y2) ints."""
    tw = width / (cols - (cols - 1) * overlap)
    th = height / (rows - (rows - 1) * overlap)
    tiles = []
    for r in range(rows):
        for c in range(cols):
            x1, y1 = round(c * tw * (1 - overlap)), round(r * th * (1 - overlap))
            tiles.append((x1, y1, min(width, round(x1 + tw)), min(height, round(y1 + th))))
    return tiles
