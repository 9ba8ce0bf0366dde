"""Face crops for the classifier: square, padded at frame edges, resized once.

The one crop routine of the project (the app, evaluation, training and INT8
calibration all cut faces here) and the one list of image suffixes.
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.meta import ModelMeta

#: Suffixes of the image files the project reads (lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif", ".heic", ".heif"})


def warp_square(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The square of ``side`` pixels centred on (``cx``, ``cy``) of ``image`` (H, W, C)
    uint8, resized to (``size``, ``size``, C) by one affine warp; where the square
    leaves the image its edge pixels are replicated."""
    k = size / side
    m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


class Cropper:
    """Cut a square around each face box and turn the batch into model input.

    The square's side is ``meta.crop_scale`` times the box's longer side (or
    ``crop_scale`` given here), centred on the box. One affine warp per face does the
    crop, the padding (replicated edge pixels where the square leaves the frame) and
    the resize to ``meta.input_size``, so no face is dropped at the border.
    """

    def __init__(self, meta: ModelMeta, crop_scale: float | None = None):
        scale = meta.crop_scale if crop_scale is None else crop_scale
        if not 0.5 <= scale <= 4.0:
            raise ValueError(f"crop scale must be in [0.5, 4], got {scale}")
        self.scale = scale
        self.size = meta.input_size
        self.mean = np.asarray(meta.mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(meta.std, np.float32) * 255.0)

    def squares(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) float32 xyxy boxes -> (N, 3) float32 rows of (centre x, centre y, side)."""
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * self.scale
        return np.stack([cx, cy, np.maximum(side, 1.0)], axis=1).astype(np.float32)

    def cut(self, frame: np.ndarray, faces) -> np.ndarray:
        """BGR uint8 frame (H, W, 3) + faces (``realtime.Faces`` or (N, 4) float32 xyxy
        boxes) -> RGB uint8 crops (N, S, S, 3)."""
        boxes = np.asarray(getattr(faces, "boxes", faces), np.float32).reshape(-1, 4)
        s = self.size
        out = np.empty((len(boxes), s, s, 3), np.uint8)
        for i, (cx, cy, side) in enumerate(self.squares(boxes)):
            out[i] = warp_square(frame, cx, cy, side, s)[..., ::-1]
        return out

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> normalised float32 (N, 3, S, S)."""
        x = (rgb.astype(np.float32) - self.mean) * self.inv_std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def crop(self, frame: np.ndarray, faces) -> np.ndarray:
        """BGR uint8 frame (H, W, 3) + N faces (as for :meth:`cut`) -> model input (N, 3, S, S) float32."""
        return self.normalize(self.cut(frame, faces))

    def crop_whole(self, image: np.ndarray) -> np.ndarray:
        """An image that already is one face crop (BGR uint8, any size) -> (1, 3, S, S).

        The whole image is taken as the crop square (``crop_scale`` does not apply)."""
        h, w = image.shape[:2]
        side = max(h, w) / self.scale
        box = np.array([[w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2]], np.float32)
        return self.crop(image, box)
