"""Training augmentation with numpy and OpenCV (no extra library).

One affine warp per image does the app's crop framing with jitter (scale, shift,
rotation, mirror), with replicated edges where the square leaves the image, exactly
as :class:`realtime.crops.Cropper` pads and resizes; then blur, colour and quality
degradations. Output is RGB uint8 ready for ``Cropper.normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random changes; ``AugmentSettings.off()`` gives the plain app crop.

    Attributes:
        scale: range of the crop square's side as a multiple of the image side
            (< 1 zooms in, > 1 zooms out with replicated edges).
        shift: largest shift of the square's centre, as a fraction of its side.
        rotate: largest rotation in degrees, either way.
        flip: probability of a horizontal mirror.
        blur: probability of a Gaussian blur (sigma 0.3-1.5 output pixels).
        brightness, contrast, saturation: largest relative change, either way.
        hue: largest hue shift in OpenCV hue units (0-180 circle).
        grayscale: probability of dropping colour.
        jpeg: probability of JPEG re-encoding at quality 30-80.
        lowres: probability of a low-resolution pass: down to a side drawn from
            ``lowres_side`` (fractions of the output side) and back up, as a small
            face in a video frame reaches the classifier (a 40 px face upscaled).
        lowres_side: range of that side, as fractions of the output side.
    """

    scale: tuple[float, float] = (0.8, 1.25)
    shift: float = 0.08
    rotate: float = 15.0
    flip: float = 0.5
    blur: float = 0.2
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 5.0
    grayscale: float = 0.05
    jpeg: float = 0.15
    lowres: float = 0.25
    lowres_side: tuple[float, float] = (0.25, 0.6)

    @classmethod
    def off(cls) -> "AugmentSettings":
        return cls((1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


class Augmenter:
    """``augment(image_bgr, rng) -> (S, S, 3) RGB uint8`` for one face image taken whole."""

    def __init__(self, size: int, settings: AugmentSettings = AugmentSettings()):
        self.size = size
        self.settings = settings

    def matrix(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """(2, 3) float32 affine from the image to the (S, S) output."""
        st, s = self.settings, self.size
        side = max(h, w) * rng.uniform(*st.scale)
        cx = w / 2 + rng.uniform(-st.shift, st.shift) * side
        cy = h / 2 + rng.uniform(-st.shift, st.shift) * side
        k = s / side
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(-st.rotate, st.rotate)), float(k))
        m[:, 2] += (s / 2 - cx, s / 2 - cy)
        if rng.random() < st.flip:
            m[0] = -m[0]
            m[0, 2] += s - 1  # pixel centres: x -> S - 1 - x
        return m.astype(np.float32)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        st, s = self.settings, self.size
        h, w = image.shape[:2]
        m = self.matrix(h, w, rng)
        interp = cv2.INTER_AREA if abs(np.linalg.det(m[:, :2])) < 1 else cv2.INTER_LINEAR
        out = cv2.warpAffine(image, m, (s, s), flags=interp, borderMode=cv2.BORDER_REPLICATE)
        if rng.random() < st.lowres:
            small = max(8, round(s * rng.uniform(*st.lowres_side)))
            out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (s, s), interpolation=cv2.INTER_LINEAR)
        if rng.random() < st.blur:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.5))
        out = self._colour(out, rng)
        if rng.random() < st.jpeg:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 81))])
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else out
        return np.ascontiguousarray(out[..., ::-1])

    def _colour(self, bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        st = self.settings
        if st.hue or st.saturation:
            hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-st.hue, st.hue)) % 180
            hsv[..., 1] *= 1 + rng.uniform(-st.saturation, st.saturation)
            bgr = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
        if rng.random() < st.grayscale:
            bgr = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if st.brightness or st.contrast:
            c = 1 + rng.uniform(-st.contrast, st.contrast)
            b = 1 + rng.uniform(-st.brightness, st.brightness)
            bgr = cv2.addWeighted(bgr, b * c, bgr, 0.0, b * (1 - c) * float(bgr.mean()))
        return bgr
