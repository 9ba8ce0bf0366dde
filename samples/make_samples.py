"""Make the project's own sample media from public-domain portraits that registry
packages ship: scikit-image's ``astronaut`` (Eileen Collins, NASA) and matplotlib's
``grace_hopper`` (US Navy). Needs the dev extra (scikit-image).

    python samples/make_samples.py      # writes samples/people.jpg and samples/people.mp4
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from realtime.faces import Faces
from realtime.sinks import VideoSink
from realtime.sources import Frame

HERE = Path(__file__).parent


def portraits() -> list[np.ndarray]:
    """The two portraits as BGR uint8 arrays."""
    import matplotlib.cbook
    import skimage.data

    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return [astronaut, hopper]


def background(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * x / width, 110 + 40 * y / height, 130 - 30 * x / width], axis=-1)
    return base.astype(np.uint8)


def paste(canvas: np.ndarray, image: np.ndarray, cx: float, cy: float, height: int) -> None:
    """Paste ``image`` scaled to ``height`` rows, centred at (cx, cy), clipped to the canvas."""
    h, w = image.shape[:2]
    scaled = cv2.resize(image, (round(w * height / h), height), interpolation=cv2.INTER_AREA)
    sh, sw = scaled.shape[:2]
    x0, y0 = round(cx - sw / 2), round(cy - sh / 2)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(canvas.shape[1], x0 + sw), min(canvas.shape[0], y0 + sh)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = scaled[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]


def make_image(path: Path) -> None:
    people = portraits()
    canvas = background(1280, 720)
    paste(canvas, people[0], 330, 360, 520)
    paste(canvas, people[1], 950, 360, 520)
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 88])


def make_video(path: Path, seconds: float = 3.0, fps: int = 25) -> None:
    """Both portraits drift towards each other and grow, like people walking closer."""
    people = portraits()
    frames = round(seconds * fps)
    with VideoSink(path, fps, crf=28) as sink:
        for i in range(frames):
            t = i / (frames - 1)
            canvas = background(640, 360)
            height = round(210 + 100 * t)
            paste(canvas, people[0], 150 + 40 * t, 190, height)
            paste(canvas, people[1], 500 - 40 * t, 175, height)
            sink.write(Frame(canvas, i, i / fps), Faces.empty(i), canvas)


if __name__ == "__main__":
    make_image(HERE / "people.jpg")
    make_video(HERE / "people.mp4")
    print("wrote", HERE / "people.jpg", HERE / "people.mp4")
