"""Frame sources: camera, video file, image, folder of images, or a stream URL.

``open_source(spec)`` turns what the user typed into one iterable of :class:`Frame`;
the loop downstream does not care which it is (after norfair's ``Video``).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from engines.crops import IMAGE_SUFFIXES
from engines.images import DEFAULT_MAX_PIXELS, is_regular, read_image
from engines.writes import check_name
from realtime.errors import RealtimeError
from realtime.frames import Frame, Source
from realtime.native import quiet_native_stderr
from realtime.reconnect import ReconnectingSource
from realtime.urls import av_reason, is_url, mask_credentials, open_url

log = logging.getLogger(__name__)

class VideoSource(Source):
    """A video file or network stream decoded by PyAV (FFmpeg)."""

    def __init__(self, spec: str, live: bool | None = False, cancel: threading.Event | None = None):
        """``live``: True for a stream, False for a file; None (a URL): decided by what
        the server says (:meth:`_ends`). ``cancel``: set (from another thread) to stop
        waiting for a network source to answer."""
        import av

        super().__init__(mask_credentials(spec))
        network = is_url(spec) and not spec.lower().startswith("file://")
        options = {"rtsp_transport": "tcp"} if spec.lower().startswith("rtsp") else {}
        try:
            if network:
                self._container = open_url(spec, options, cancel)
            else:
                self._container = av.open(spec, options=options)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise RealtimeError(f"cannot open {self.name}: {av_reason(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise RealtimeError(f"{self.name}: has no video stream")
        if live is None:
            ends = self._ends()
            live = ends is None
            log.info("%s: %s", self.name, f"a file ({ends}): every frame, then the end" if ends else
                     "a live stream: its newest frames, reopened when it drops")
        self.kind, self.live = ("stream", True) if live else ("video", False)
        self.paths = [] if network else [Path(spec)]
        self._stream = self._container.streams.video[0]
        # slice threads: frame threads would hold a decoded frame (and its latency)
        # per thread, ~13 MB more at 1080p, for speed the analysis cannot use
        self._stream.thread_type = "SLICE"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        ctx = self._stream.codec_context
        self.size = (ctx.width, ctx.height) if ctx.width else None
        self.frame_count = self._stream.frames or None
        self.decode_errors = 0

    def _ends(self) -> str | None:
        """What shows that a network source ends with its stream (a file served over
        HTTP, a recorded HLS playlist): a known duration or a known size (HTTP
        Content-Length); None: a live stream (neither is known)."""
        duration = self._container.duration
        try:
            size = self._container.size  # the server's Content-Length; negative when unknown
        except (AttributeError, ValueError, OSError):
            size = -1
        if duration and duration > 0:
            return f"{duration / 1e6:.1f} s"
        return f"{size} bytes" if size > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        """Every decodable frame in order, upright (its display rotation applied).

        ``index`` is the frame's place in the source and ``time`` its presentation
        time from the stream's start, both from the frame's pts, so damaged packets
        leave gaps instead of renumbering what follows. Damaged packets are skipped;
        a file cut short ends the iteration; either is reported in one warning line."""
        import av

        base = self._stream.time_base
        origin = self._stream.start_time
        seen: list[int] = []  # pts of every packet so far, sorted
        on_grid = True  # every pts so far on the frame-rate grid (constant frame rate)
        last, count, damaged, stopped, last_time = -1, 0, 0, "", None
        gaps: list[tuple[int, int]] = []  # (first, last) index of each run of missing frames
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as e:  # the container itself is cut or broken here
                stopped = av_reason(e)
                break
            if packet.pts is not None and not self.live:
                bisect.insort(seen, packet.pts)
                origin = packet.pts if origin is None else origin
                if on_grid and base is not None and self.fps:
                    steps = float((packet.pts - origin) * base) * self.fps
                    on_grid = abs(steps - round(steps)) < 0.05
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                damaged += 1
                continue
            for frame in decoded:
                if frame.pts is not None and base is not None:
                    origin = frame.pts if origin is None else origin
                    t = float((frame.pts - origin) * base)
                    # constant rate: the index is the time in frames, whatever was lost;
                    # variable: the frame's rank among the packets seen so far
                    rank = round(t * self.fps) if on_grid and self.fps else bisect.bisect_left(seen, frame.pts)
                    index = max(rank, last + 1)
                else:
                    index = last + 1
                    t = index / (self.fps or 25.0)
                if index > last + 1:
                    gaps.append((last + 1, index - 1))
                last, last_time = index, t
                rotation = int(round(frame.rotation or 0)) % 360 if hasattr(frame, "rotation") else 0
                image = frame.to_ndarray(format="bgr24")
                if rotation:
                    image = np.ascontiguousarray(np.rot90(image, rotation // 90))
                yield Frame(image, index, t, rotation=rotation)
                del image  # not held while the next frame is decoded
                count += 1
        self.decode_errors = damaged + bool(stopped)
        first = float(origin * base) if origin is not None and base is not None else 0.0
        self._report(count, damaged, stopped, None if last_time is None else first + last_time, first, last, gaps)

    def _end(self) -> float | None:
        """Where the header says the stream ends, in seconds of the stream's own clock
        (a first frame at 0.85 s and 12 s of video end at 12.85 s), if it says."""
        stream = self._stream
        if stream.duration and stream.time_base is not None:  # a span from the stream's start
            return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
        # the container's: from zero (Matroska's segment duration), or the span from the
        # start (estimated): the earlier of the two, so a late first frame is never "missing"
        return self._container.duration / 1e6 if self._container.duration else None

    def _report(self, frames: int, damaged: int, stopped: str, last_time: float | None, first: float,
                last: int, gaps: list[tuple[int, int]]) -> None:
        """One warning line when frames were lost: damaged packets, frames missing in the
        middle (named by index), or a file that ends before its header says (frame count
        for MP4, duration for MKV and others, counted from the first frame's time)."""
        end = self._end()
        step = 1.0 / (self.fps or 25.0)
        total = self.frame_count or (round((end - first) / step) if end and end > first else None)
        short = not self.live and (
            (self.frame_count is not None and last + 1 < self.frame_count)
            or (self.frame_count is None and end and last_time is not None and last_time + 2 * step < end)
        )
        if not (damaged or stopped or short or gaps):
            return
        parts = [f"{frames} frames decoded" + (f" of {'about ' if not self.frame_count else ''}{total}" if total else "")]
        if damaged:
            parts.append(f"{damaged} damaged packets skipped")
        if gaps:
            named = [f"frame ~{a}" if a == b else f"frames ~{a}-{b}" for a, b in gaps[:3]]
            more = f" and {len(gaps) - 3} more gaps" if len(gaps) > 3 else ""
            parts.append(", ".join(named) + more + " missing")
        if stopped or short:
            where = f"after frame {last}" if last >= 0 else "from the start"
            at = f"file ends at {last_time:.1f} s of {end:.1f} s" if end and last_time is not None else "file ends early"
            parts.append(f"the rest is unreadable {where} ({stopped or at})")
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


class ImageSource(Source):
    """One image file or every image in a folder (sorted by name). Only regular files
    are read (a FIFO or device named like an image is skipped with a warning: reading
    it could block for ever); images over ``max_pixels`` are refused (in a folder:
    skipped with a warning)."""

    def __init__(self, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(str(path))
        self._first = None
        self.max_pixels = max_pixels
        if path.is_dir():
            self.kind = "folder"
            named = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self._files = [p for p in named if is_regular(p)]
            for odd in sorted(set(named) - set(self._files)):
                log.warning("skipping %s: not a regular file (a FIFO, device, folder or broken link)", odd)
            if not self._files:
                raise RealtimeError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            self.kind = "image"
            self._files = [path]
            self._first: np.ndarray | None = _read_image(path, max_pixels)  # read once: its warnings once
            self.size = _image_size(self._first)
        self.frame_count = len(self._files)
        self.paths = [path, *self._files] if path.is_dir() else [path]
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self._files):
            try:
                image = self._first if self.kind == "image" and self._first is not None else _read_image(path, self.max_pixels)
                self._first = None
            except RealtimeError as e:
                if self.kind == "image":
                    raise
                self.skipped += 1
                log.warning("skipping %s", e)
                continue
            yield Frame(image, index, 0.0, path.name)


def _read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 BGR (:func:`engines.images.read_image`: any file name, regular
    files only, at most ``max_pixels``). libjpeg's own complaints (printed from C) are
    kept off stderr; a JPEG cut short is named in one warning instead."""
    with quiet_native_stderr():
        image = read_image(path, max_pixels)
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(max(0, path.stat().st_size - 64))
        tail = f.read()
    if head == b"\xff\xd8" and b"\xff\xd9" not in tail:
        log.warning("%s: the JPEG file is cut short; its missing part is analysed as grey", path)
    return image


def _image_size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def source_specs(given: tuple[str, ...] | list[str], source_file: str | Path | None = None) -> list[str]:
    """The sources of a live command: ``given`` (``--source``, or ``$REALTIME_SOURCE``)
    and one a line from ``source_file`` (blank lines skipped), so a URL holding a
    password need not be on the command line; neither: camera 0."""
    specs = list(given)
    if source_file is not None:
        try:
            text = Path(source_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RealtimeError(f"--source-file {source_file}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
        specs += [line.strip() for line in text.splitlines() if line.strip()]
        if len(specs) == len(given):
            raise RealtimeError(f"--source-file {source_file}: holds no source (one a line)")
    return specs or ["0"]


def open_source(spec: str | int, reconnect: float | None = 300.0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    """Open a camera index ("0"), a URL, an image, a folder of images or a video file.

    Cameras and live streams reconnect when they drop, for up to ``reconnect`` seconds
    per gap (None: for ever; 0: never). A URL whose server gives its duration or size
    (a file over HTTP) is read as a file: every frame, once. Images over ``max_pixels``
    are refused."""
    text = str(spec).strip()
    if text.isdigit():
        opener: Callable[[], Source] = lambda: CameraSource(int(text))  # noqa: E731
    elif is_url(text) and not text.lower().startswith("file://"):
        # a URL is a file when its server says where it ends (every frame, then the
        # end), else a live stream (reopened when it drops)
        first = VideoSource(text, live=None)
        if not first.live or reconnect == 0:
            return first
        closed = threading.Event()  # the run is ending: an attempt to reopen stops waiting
        return ReconnectingSource(lambda: VideoSource(text, live=True, cancel=closed), max_gap=reconnect, first=first,
                                  cancel=closed)
    else:
        opener = None
    if opener is not None:
        return ReconnectingSource(opener, max_gap=reconnect) if reconnect != 0 else opener()
    path = Path(text.removeprefix("file://"))
    check_name(path, "input")
    if not path.exists():
        raise RealtimeError(f"input not found: {path}")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path, max_pixels)
    if not is_regular(path):
        raise RealtimeError(f"{path}: not a regular file (a FIFO or device); pass a video file, an image or a folder")
    return VideoSource(str(path))
