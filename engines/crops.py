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


#: Largest eye-line tilt, in degrees, that the cropper levels: beyond it the keypoints
#: are likelier wrong (a profile, a false detection) than the head so tilted.
MAX_LEVEL_ANGLE = 45.0
#: Eye-line tilts up to this many degrees are left as they are, larger ones turned by the
#: excess (a soft dead band: continuous, so a tilt at its edge does not jump). The
#: keypoints wobble by a few degrees from frame to frame, which turned upright faces'
#: crops to and fro and made their labels flicker (measured in the model card's "Tilted
#: heads"); a tilt this small costs the model nothing.
LEVEL_DEADBAND = 10.0
#: Smallest eye distance, as a share of the box's longer side, that the cropper levels
#: by (closer eyes: a profile, whose eye line says little about the head's roll).
MIN_EYE_DISTANCE = 0.15


def framed_side(longer: float, framing: float | None, crop_scale: float) -> float:
    """The side of the square of ``crop_scale`` face-box sides in an image whose longer
    side ``longer`` spans ``framing`` of them (a wider crop, as its set records); an
    unknown ``framing`` (None or NaN) is taken as the crop square already: ``longer``."""
    return longer * crop_scale / framing if framing and np.isfinite(framing) else longer


def warp_square(image: np.ndarray, cx: float, cy: float, side: float, size: int, angle: float = 0.0) -> np.ndarray:
    """The square of ``side`` pixels centred on (``cx``, ``cy``) of ``image`` (H, W, C)
    uint8, resized to (``size``, ``size``, C) by one affine warp; where the square
    leaves the image its edge pixels are replicated. With ``angle`` (degrees), the
    square is turned that much clockwise on screen about its centre first, so the
    content turns counter-clockwise: a line at ``angle`` (``atan2(dy, dx)`` in image
    coordinates, y down) comes out level. Still one warp, one resample."""
    k = size / side
    if angle:
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(angle), k)
        m[:, 2] += (size / 2 - cx, size / 2 - cy)
    else:
        m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


class Cropper:
    """Cut a square around each face box and turn the batch into model input.

    The square's side is ``meta.crop_scale`` times the box's longer side (or
    ``crop_scale`` given here), centred on the box. One affine warp per face does the
    crop, the padding (replicated edge pixels where the square leaves the frame) and
    the resize to ``meta.input_size``, so no face is dropped at the border.

    With ``level_eyes`` (``meta.level_eyes`` unless given here) the same warp also
    turns each square about its centre so that the face's eyes (``Faces.eyes``) are
    level, where both are known, at least ``MIN_EYE_DISTANCE`` of the box apart and
    tilted at most ``MAX_LEVEL_ANGLE`` degrees; other faces (boxes without eyes,
    coasting tracks) are cut as without it. A tilt of up to ``deadband`` degrees is
    left, a larger one turned by the excess (:data:`LEVEL_DEADBAND`).
    """

    def __init__(self, meta: ModelMeta, crop_scale: float | None = None, level_eyes: bool | None = None,
                 deadband: float = LEVEL_DEADBAND):
        scale = meta.crop_scale if crop_scale is None else crop_scale
        if not 0.5 <= scale <= 4.0:
            raise ValueError(f"crop scale must be in [0.5, 4], got {scale}")
        self.scale = scale
        self.level_eyes = meta.level_eyes if level_eyes is None else bool(level_eyes)
        self.deadband = float(deadband)
        self.size = meta.input_size
        self.mean = np.asarray(meta.mean, np.float32) * 255.0
        self.inv_std = 1.0 / (np.asarray(meta.std, np.float32) * 255.0)

    def squares(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) float32 xyxy boxes -> (N, 3) float32 rows of (centre x, centre y, side)."""
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * self.scale
        return np.stack([cx, cy, np.maximum(side, 1.0)], axis=1).astype(np.float32)

    def angles(self, boxes: np.ndarray, eyes: np.ndarray | None) -> np.ndarray:
        """(N, 4) xyxy boxes + (N, 2, 2) eyes (or None) -> (N,) float32 degrees each
        crop is turned by (the eye line's tilt, ``atan2(dy, dx)`` from the right eye to
        the left, less :attr:`deadband` towards 0), 0 where not levelled (off, eyes
        unknown or implausible, or a tilt within the dead band)."""
        if not self.level_eyes or eyes is None or len(boxes) == 0:
            return np.zeros(len(boxes), np.float32)
        d = eyes[:, 1] - eyes[:, 0]
        with np.errstate(invalid="ignore"):
            angle = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
            longer = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            ok = (np.abs(angle) <= MAX_LEVEL_ANGLE) & (np.hypot(d[:, 0], d[:, 1]) >= MIN_EYE_DISTANCE * longer)
        turn = np.sign(angle) * np.maximum(np.abs(angle) - self.deadband, 0.0)
        return np.where(ok, turn, 0.0).astype(np.float32)

    def cut(self, frame: np.ndarray, faces) -> np.ndarray:
        """BGR uint8 frame (H, W, 3) + faces (``realtime.Faces`` or (N, 4) float32 xyxy
        boxes) -> RGB uint8 crops (N, S, S, 3), levelled by ``faces.eyes`` when
        :attr:`level_eyes`."""
        boxes = np.asarray(getattr(faces, "boxes", faces), np.float32).reshape(-1, 4)
        angles = self.angles(boxes, getattr(faces, "eyes", None))
        s = self.size
        out = np.empty((len(boxes), s, s, 3), np.uint8)
        for i, ((cx, cy, side), angle) in enumerate(zip(self.squares(boxes), angles)):
            out[i] = warp_square(frame, cx, cy, side, s, angle)[..., ::-1]
        return out

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) -> normalised float32 (N, 3, S, S)."""
        x = (rgb.astype(np.float32) - self.mean) * self.inv_std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def crop(self, frame: np.ndarray, faces) -> np.ndarray:
        """BGR uint8 frame (H, W, 3) + N faces (as for :meth:`cut`) -> model input (N, 3, S, S) float32."""
        return self.normalize(self.cut(frame, faces))

    def crop_whole(self, image: np.ndarray, framing: float | None = None) -> np.ndarray:
        """An image that already is one face crop (BGR uint8, any size) -> (1, 3, S, S).

        The whole image is taken as the crop square (``crop_scale`` does not apply),
        unless ``framing`` says how many times the face box's side the image spans (a
        wider crop): then the square of ``crop_scale`` times that box is cut from it."""
        return self.crop(image, self.whole_box(image, framing)[None])

    def whole_box(self, image: np.ndarray, framing: float | None = None) -> np.ndarray:
        """The (4,) float32 xyxy face box of an image that is one face crop, as
        :meth:`crop_whole` takes it: centred, its side the image's over ``framing``
        (unknown: over ``crop_scale``)."""
        h, w = image.shape[:2]
        side = framed_side(max(h, w), framing, self.scale) / self.scale  # the face box's side
        return np.array([w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2], np.float32)
