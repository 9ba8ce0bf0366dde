"""Frame sources: camera, video file, image, folder of images, or a stream URL.

``open_source(spec)`` turns what the user typed into one iterable of :class:`Frame`;
the loop downstream does not care which it is (after norfair's ``Video``).
"""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from engines.crops import IMAGE_SUFFIXES
from realtime.errors import RealtimeError
from realtime.native import quiet_native_stderr

log = logging.getLogger(__name__)

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass
class Frame:
    """One decoded frame.

    Attributes:
        image: (H, W, 3) uint8, BGR.
        index: 0-based position in the source.
        time: seconds from the start of the source (stream time for files, wall
            clock for live sources, 0 for still images).
        name: file name for image and folder sources, else "".
    """

    image: np.ndarray
    index: int
    time: float
    name: str = ""


def mask_credentials(spec: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x`` (safe for logs)."""
    return re.sub(r"(://[^/:@]+:)[^/@]*@", r"\1***@", spec)


class Source(ABC):
    """An open source of frames; iterate it, then close it (or use ``with``).

    Attributes:
        name: what to show the user (credentials masked).
        kind: "camera", "video", "stream", "image" or "folder".
        live: True when frames arrive in real time (camera, stream).
        fps: frames per second if known (video, camera, stream), else None.
        size: (width, height) if known before the first frame, else None.
        frame_count: number of frames if known, else None.
    """

    kind: str = ""
    live: bool = False

    def __init__(self, name: str):
        self.name = name
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.frame_count: int | None = None

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:  # noqa: B027 - a default: most sources hold nothing to release
        """Release the device, file or connection (a no-op where there is none)."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSource(Source):
    """A video file or network stream decoded by PyAV (FFmpeg)."""

    def __init__(self, spec: str, live: bool = False):
        import av

        super().__init__(mask_credentials(spec))
        self.kind, self.live = ("stream", True) if live else ("video", False)
        options = {"rtsp_transport": "tcp"} if spec.lower().startswith("rtsp") else {}
        try:
            self._container = av.open(spec, options=options, timeout=(10.0, 10.0) if live else None)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise RealtimeError(f"cannot open {self.name}: {_av_reason(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise RealtimeError(f"{self.name}: has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        ctx = self._stream.codec_context
        self.size = (ctx.width, ctx.height) if ctx.width else None
        self.frame_count = self._stream.frames or None
        self.decode_errors = 0

    def __iter__(self) -> Iterator[Frame]:
        """Every decodable frame in order. A damaged packet is skipped; a file cut
        short ends the iteration; either is reported in one warning line at the end."""
        import av

        start, index, damaged, stopped = None, 0, 0, ""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as e:  # the container itself is cut or broken here
                stopped = _av_reason(e)
                break
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                damaged += 1
                continue
            for frame in decoded:
                t = frame.time if frame.time is not None else index / (self.fps or 25.0)
                start = t if start is None else start
                yield Frame(frame.to_ndarray(format="bgr24"), index, t - start)
                index += 1
        self.decode_errors = damaged + bool(stopped)
        short = self.frame_count is not None and not self.live and index + damaged < self.frame_count
        if damaged or stopped or short:
            parts = [f"{index} frames decoded" + (f" of {self.frame_count}" if self.frame_count else "")]
            if damaged:
                parts.append(f"{damaged} damaged packets skipped")
            if stopped or short:
                parts.append(f"the rest is unreadable ({stopped or 'file ends early'})")
            log.warning("%s: %s", self.name, "; ".join(parts))

    def close(self) -> None:
        self._container.close()


class CameraSource(Source):
    """A local camera by index, read with OpenCV."""

    kind, live = "camera", True

    def __init__(self, index: int):
        super().__init__(f"camera {index}")
        with quiet_native_stderr():  # OpenCV prints its probing errors from C++
            self._cap = cv2.VideoCapture(index)
        if not self._cap.isOpened():
            raise RealtimeError(f"no camera at index {index}: check that it is connected and not in use, or pass a file or URL to --source")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or None
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w and h else None

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        while True:
            ok, image = self._cap.read()
            if not ok:
                log.warning("%s: no more frames", self.name)
                return
            yield Frame(image, index, time.monotonic() - start)
            index += 1

    def close(self) -> None:
        self._cap.release()


class ReconnectingSource(Source):
    """A live source that comes back: when the camera or stream drops, it is reopened
    with exponential backoff and the run goes on. Frames are numbered on across gaps
    and timed by the wall clock; each gap is logged and counted.

    Args:
        opener: opens the underlying source; called once here (its errors reach the
            caller: a source that never worked is a user error, not a drop).
        first_delay, max_delay: backoff between reopen attempts, in seconds.
        max_gap: give up (end the run) after this many seconds without frames; None
            waits for ever.
    """

    def __init__(self, opener: Callable[[], Source], first_delay: float = 0.5, max_delay: float = 8.0, max_gap: float | None = 300.0):
        self._opener = opener
        self._inner: Source | None = opener()
        super().__init__(self._inner.name)
        self.kind, self.live = self._inner.kind, True
        self.fps, self.size = self._inner.fps, self._inner.size
        self.first_delay, self.max_delay, self.max_gap = first_delay, max_delay, max_gap
        self.reconnects = 0
        self.gap_seconds = 0.0
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        while self._inner is not None:
            for frame in self._inner:
                yield Frame(frame.image, index, time.monotonic() - start)
                index += 1
            self._inner.close()
            self._inner = self._reopen()

    def _reopen(self) -> Source | None:
        lost = time.monotonic()
        delay = self.first_delay
        log.warning("%s: no more frames; reconnecting", self.name)
        while not self._closed:
            time.sleep(delay)
            try:
                source = self._opener()
            except RealtimeError as e:
                waited = time.monotonic() - lost
                if self.max_gap is not None and waited >= self.max_gap:
                    log.error("%s: gave up after %.0f s without frames (%s)", self.name, waited, e)
                    return None
                log.info("%s: still unavailable after %.1f s, retrying in %.1f s", self.name, waited, min(delay * 2, self.max_delay))
                delay = min(delay * 2, self.max_delay)
                continue
            gap = time.monotonic() - lost
            self.reconnects += 1
            self.gap_seconds += gap
            log.warning("%s: reconnected after a %.1f s gap (reconnect %d)", self.name, gap, self.reconnects)
            return source
        return None

    def close(self) -> None:
        self._closed = True
        if self._inner is not None:
            self._inner.close()


class ImageSource(Source):
    """One image file or every image in a folder (sorted by name)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        if path.is_dir():
            self.kind = "folder"
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise RealtimeError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            self.kind = "image"
            self._files = [path]
            self.size = _image_size(_read_image(path))
        self.frame_count = len(self._files)
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self._files):
            try:
                image = _read_image(path)
            except RealtimeError as e:
                if self.kind == "image":
                    raise
                self.skipped += 1
                log.warning("skipping %s", e)
                continue
            yield Frame(image, index, 0.0, path.name)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise RealtimeError(f"{path}: not a readable image")
    return image


def _image_size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def _av_reason(e: Exception) -> str:
    return mask_credentials(getattr(e, "strerror", None) or str(e).splitlines()[0])


def open_source(spec: str | int, reconnect: float | None = 300.0) -> Source:
    """Open a camera index ("0"), a URL, an image, a folder of images or a video file.

    Cameras and URLs reconnect when they drop, for up to ``reconnect`` seconds per
    gap (None: for ever; 0: never)."""
    text = str(spec).strip()
    if text.isdigit():
        opener: Callable[[], Source] = lambda: CameraSource(int(text))  # noqa: E731
    elif _URL.match(text) and not text.lower().startswith("file://"):
        opener = lambda: VideoSource(text, live=True)  # noqa: E731
    else:
        opener = None
    if opener is not None:
        return ReconnectingSource(opener, max_gap=reconnect) if reconnect != 0 else opener()
    path = Path(text.removeprefix("file://"))
    if not path.exists():
        raise RealtimeError(f"input not found: {path}")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path)
    return VideoSource(str(path))
