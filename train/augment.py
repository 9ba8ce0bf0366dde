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
        motion: probability of a motion blur (a line kernel of 3-9 output pixels at
            a random angle: a moving head or camera).
        occlude: probability of a rectangle (15-40% of the side each way) of flat
            colour or noise over the face: a hand, a microphone, another head.
        shade: probability of hard light: a linear ramp of gain from 1 down to
            0.35-0.9 across the face in a random direction (side light, shadow).
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
    motion: float = 0.0
    occlude: float = 0.0
    shade: float = 0.0

    @classmethod
    def off(cls) -> "AugmentSettings":
        return cls((1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def wild(cls) -> "AugmentSettings":
        """The conditions of faces in the wild on top of the default: looser and
        off-centre framing, more grayscale, motion blur, occlusion and hard light."""
        return cls(scale=(0.8, 1.45), shift=0.12, grayscale=0.15, motion=0.15, occlude=0.2, shade=0.2)


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
        if rng.random() < st.motion:
            out = _motion_blur(out, int(rng.integers(3, 10)), rng.uniform(0, 180))
        out = self._colour(out, rng)
        if rng.random() < st.shade:
            out = _shade(out, rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.9))
        if rng.random() < st.occlude:
            out = _occlude(out, rng)
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


def _motion_blur(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    """(S, S, 3) uint8 blurred along a line of ``length`` pixels at ``angle`` degrees."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    return cv2.filter2D(image, -1, kernel / max(float(kernel.sum()), 1e-6))


def _shade(image: np.ndarray, direction: float, low: float) -> np.ndarray:
    """(S, S, 3) uint8 times a gain ramp from 1 to ``low`` along ``direction`` (radians)."""
    s = image.shape[0]
    t = np.linspace(-0.5, 0.5, s, dtype=np.float32)
    ramp = np.cos(direction) * t[None, :] + np.sin(direction) * t[:, None]  # in [-0.71, 0.71]
    gain = 1 - (1 - low) * np.clip(ramp / 1.42 + 0.5, 0, 1)
    return np.clip(image * gain[..., None], 0, 255).astype(np.uint8)


def _occlude(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) uint8 with one rectangle of flat colour or noise pasted in."""
    s = image.shape[0]
    h, w = (max(2, round(s * rng.uniform(0.15, 0.4))) for _ in range(2))
    y, x = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
    out = image.copy()
    if rng.random() < 0.5:
        out[y : y + h, x : x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    else:
        out[y : y + h, x : x + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return out
