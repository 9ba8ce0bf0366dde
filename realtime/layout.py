"""Where each face's label goes so that no label covers another.

:func:`place_labels` is pure: boxes and label sizes in, label rectangles out. Faces
are served largest first; each takes the first of its candidate places that lies
inside the frame and meets no label placed before it: above its box, below it,
inside its top edge, inside its bottom edge, then those shifted sideways and stacked
further up or down (each moved sideways into the frame where it sticks out), then
the same moved up or down into the frame, then (rarely, in a dense crowd) the free
place of a coarse grid nearest to its box. A label that finds no room at all is left out rather than drawn
over another.
"""

from __future__ import annotations

import numpy as np

#: sideways shifts tried, in label widths
_SHIFTS = (0.0, -0.5, 0.5, -1.0, 1.0)
#: how many label heights further up (above) or down (below) are tried
_STACK = 3


def _fit(rects: np.ndarray, width: int, height: int, vertical: bool) -> np.ndarray:
    """(M, 4) rectangles shifted sideways into the frame and, ``vertical``, up or down
    into it; without, a rectangle still outside it is marked (x1 = -1)."""
    w, h = rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1]
    x = np.clip(rects[:, 0], 0, np.maximum(0, width - w))
    y = np.clip(rects[:, 1], 0, np.maximum(0, height - h)) if vertical else rects[:, 1]
    out = np.stack([x, y, x + w, y + h], 1)
    out[(y < 0) | (y + h > height), 0] = -1
    return out


def _free(candidates: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """(M,) True where a candidate meets none of the ``placed`` rectangles."""
    if not len(placed):
        return np.ones(len(candidates), bool)
    c, p = candidates[:, None, :], placed[None, :, :]
    meets = (c[..., 0] < p[..., 2]) & (p[..., 0] < c[..., 2]) & (c[..., 1] < p[..., 3]) & (p[..., 1] < c[..., 3])
    return ~meets.any(1)


def _offsets() -> tuple[np.ndarray, ...]:
    """The candidate places as x = x1 + round(shift * w), y = a * y1 + b * y2 + c * h
    (one row each, best first): above, below, inside at the top, inside at the
    bottom; then, for each stacking step k and sideways shift, above and below."""
    rows = [(0.0, 1, 0, -1), (0.0, 0, 1, 0), (0.0, 1, 0, 0), (0.0, 0, 1, -1)]
    for k in range(_STACK + 1):
        for shift in _SHIFTS:
            rows += [(shift, 1, 0, -1 - k), (shift, 0, 1, k)]
    shift, a, b, c = (np.array(col) for col in zip(*rows))
    return shift, a, b, c


_SHIFT, _A, _B, _C = _offsets()


def _candidates(box: np.ndarray, w: int, h: int) -> np.ndarray:
    """(M, 2) top-left corners to try for a w x h label of ``box``, best first."""
    x1, y1, _, y2 = np.round(box).astype(np.int64)
    return np.stack([x1 + np.round(_SHIFT * w).astype(np.int64), _A * y1 + _B * y2 + _C * h], 1)


def _grid(box: np.ndarray, w: int, h: int, width: int, height: int) -> np.ndarray:
    """Every place of a grid (steps of half a label) over the frame, nearest first."""
    xs = np.arange(0, max(1, width - w + 1), max(1, w // 2))
    ys = np.arange(0, max(1, height - h + 1), max(1, h // 2))
    gx, gy = np.meshgrid(xs, ys)
    spots = np.stack([gx.ravel(), gy.ravel()], 1)
    anchor = np.array([box[0], box[1] - h])
    return spots[np.argsort(((spots - anchor) ** 2).sum(1), kind="stable")]


def place_labels(boxes: np.ndarray, sizes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Label rectangles that meet neither each other nor the frame's edges.

    Args:
        boxes: (N, 4) float, the faces' x1, y1, x2, y2 in pixels.
        sizes: (N, 2) int, each label's width and height in pixels.
        width, height: the frame's size.

    Returns:
        (N, 4) int64 x1, y1, x2, y2 (half-open: x2, y2 are one past the last pixel)
        inside the frame, pairwise disjoint; a row of -1 for a label left out.
    """
    n = len(boxes)
    out = np.full((n, 4), -1, np.int64)
    if n == 0:
        return out
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    placed = np.zeros((0, 4), np.int64)
    for i in np.argsort(-areas, kind="stable"):
        w, h = (int(v) for v in sizes[i])
        if w > width or h > height:
            continue
        near = _candidates(boxes[i], w, h)
        # the near places as they are, then moved into the frame, then the grid
        for spots, vertical in ((near, False), (near, True), (None, True)):
            if spots is None:
                spots = _grid(boxes[i], w, h, width, height)
            rects = _fit(np.concatenate([spots, spots + [w, h]], 1), width, height, vertical)
            free = np.flatnonzero(_free(rects, placed) & (rects[:, 0] >= 0))
            if len(free):
                out[i] = rects[free[0]]
                placed = np.concatenate([placed, out[i : i + 1]])
                break
    return out
