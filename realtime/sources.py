"""Frame sources: camera, video file, image, folder of images, or a stream URL.

``open_source(spec)`` turns what the user typed into one iterable of :class:`Frame`;
the loop downstream does not care which it is (after norfair's ``Video``).
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
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
        rotation: degrees the source's display matrix turned ``image`` (counter-
            clockwise) to make it upright; a video output turns it back and keeps the
            matrix, so it shows as the source did.
    """

    image: np.ndarray
    index: int
    time: float
    name: str = ""
    rotation: int = 0


# a URL in a message: up to white space, less the punctuation that ends a sentence
_URL_TOKEN = re.compile(r"[a-z][a-z0-9+.-]*://\S*?(?=[:,;.)'\"]*(?:\s|$))", re.IGNORECASE)
# userinfo: everything from "://" to the LAST "@" that a host name follows, so a
# password holding "@", "/", "?" or "#" is masked whole (an "@" later in the path or
# query over-masks: the safe side)
_USERINFO = re.compile(r"(?<=://)\S*@(?=[\w.\-\[\]:%]*(?:[/?#]|$))")
_SECRET_NAMES = (r"token|key|pass|pw|secret|sig|auth|cred|session|cookie|jwt|bearer|access|private|ticket|"
                 r"streamid|code|hash|nonce")
_SECRET_QUERY = re.compile(rf"([?&;][^=&#\s]*(?:{_SECRET_NAMES})[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)
_FRAGMENT = re.compile(r"#\S*")
# an RTMP stream key is the path after the application name: rtmp://host/app/KEY
_RTMP_KEY = re.compile(r"^(rtmp[a-z]*://[^/\s]+/[^/\s?#]+/)[^\s?#]+", re.IGNORECASE)


def _mask_url(url: str) -> str:
    url = _USERINFO.sub("***@", url)
    url = _FRAGMENT.sub("#***", url)
    url = _RTMP_KEY.sub(r"\1***", url)
    return _SECRET_QUERY.sub(r"\1***", url)


def mask_credentials(text: str) -> str:
    """Mask secrets in every URL in ``text`` (safe for logs, errors and results): the
    whole userinfo (``rtsp://user:pw@host`` -> ``rtsp://***@host``, also a token alone
    or a password holding ``@``, ``/``, ``?`` or ``#``), the fragment (``#access_token=``
    ...), an RTMP stream key (``rtmp://host/app/***``) and the values of query
    parameters whose names look secret (``?token=...``, ``api_key``, ``pw``,
    ``password``, ``sig``, ``auth``, ``access_...``, ``streamid``...)."""
    return _URL_TOKEN.sub(lambda m: _mask_url(m.group(0)), text)


class Source(ABC):
    """An open source of frames; iterate it, then close it (or use ``with``).

    Attributes:
        name: what to show the user (credentials masked).
        kind: "camera", "video", "stream", "image" or "folder".
        live: True when frames arrive in real time (camera, stream).
        fps: frames per second if known (video, camera, stream), else None.
        size: (width, height) if known before the first frame, else None.
        frame_count: number of frames if known, else None.
        paths: the local files (and folder) it reads, which no output may overwrite.
    """

    kind: str = ""
    live: bool = False

    def __init__(self, name: str):
        self.name = name
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.frame_count: int | None = None
        self.paths: list[Path] = []

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

    def __init__(self, spec: str, live: bool | None = False, cancel: threading.Event | None = None):
        """``live``: True for a stream, False for a file; None (a URL): decided by what
        the server says (:meth:`_ends`). ``cancel``: set (from another thread) to stop
        waiting for a network source to answer."""
        import av

        super().__init__(mask_credentials(spec))
        network = bool(_URL.match(spec)) and not spec.lower().startswith("file://")
        options = {"rtsp_transport": "tcp"} if spec.lower().startswith("rtsp") else {}
        try:
            if network:
                self._container = _open_network(spec, options, cancel)
            else:
                self._container = av.open(spec, options=options)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise RealtimeError(f"cannot open {self.name}: {_av_reason(e)}") from None
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
                stopped = _av_reason(e)
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


class ReconnectingSource(Source):
    """A live source that comes back: when the camera or stream drops, it is reopened
    with exponential backoff and the run goes on. Frames are numbered on across gaps
    and timed by the wall clock; each gap is logged and counted.

    Args:
        opener: opens the underlying source; called once here (its errors reach the
            caller: a source that never worked is a user error, not a drop).
        first_delay, max_delay: backoff between reopen attempts, in seconds.
        max_gap: give up (end the source, and set ``gave_up``) this many seconds after
            the last frame; None waits for ever.
        first: the source already opened (else ``opener`` is called here).
        cancel: the event :meth:`interrupt` sets (an ``opener`` waiting for a server
            may watch it to stop waiting).
    """

    def __init__(self, opener: Callable[[], Source], first_delay: float = 0.5, max_delay: float = 8.0, max_gap: float | None = 300.0,
                 first: Source | None = None, cancel: threading.Event | None = None):
        self._opener = opener
        self._inner: Source | None = first if first is not None else opener()
        super().__init__(self._inner.name)
        self.kind, self.live = self._inner.kind, True
        self.fps, self.size = self._inner.fps, self._inner.size
        self.first_delay, self.max_delay, self.max_gap = first_delay, max_delay, max_gap
        self.reconnects = 0
        self.gap_seconds = 0.0
        self.gave_up: str | None = None  # why it was given up (max_gap passed without frames)
        self._closed = cancel or threading.Event()  # set when the run ends (the opener may watch it too)

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        lost: float | None = None  # when frames stopped; None while they flow
        delay = self.first_delay
        while self._inner is not None:
            for frame in self._inner:
                if lost is not None:
                    gap = time.monotonic() - lost
                    self.reconnects += 1
                    self.gap_seconds += gap
                    log.warning("%s: reconnected after a %.1f s gap (reconnect %d)", self.name, gap, self.reconnects)
                    lost, delay = None, self.first_delay
                yield replace(frame, index=index, time=time.monotonic() - start)
                index += 1
            self._inner.close()
            if lost is None:
                lost = time.monotonic()
                log.warning("%s: no more frames; reconnecting", self.name)
            else:
                # It opened but sent nothing: keep backing off, and keep counting the gap
                # from the last frame, so max_gap still ends a source that never recovers.
                log.info("%s: reopened but sent no frames", self.name)
            self._inner, delay = self._reopen(lost, delay)

    def _reopen(self, lost: float, delay: float) -> tuple[Source | None, float]:
        """Reopen after waiting ``delay`` (doubling up to ``max_delay`` while opening fails);
        returns the source (None: closed, or ``max_gap`` passed since ``lost``) and the
        delay the next attempt would wait."""
        why = "it sent no frames"
        while True:
            waited = time.monotonic() - lost
            if self.max_gap is not None and waited >= self.max_gap:
                self.gave_up = f"gave up after {waited:.1f} s without frames ({why})"
                log.error("%s: %s", self.name, self.gave_up)
                return None, delay
            # the last attempt comes at max_gap, not at the next step of the backoff after it
            if self._closed.wait(delay if self.max_gap is None else min(delay, self.max_gap - waited)):
                return None, delay
            waited = time.monotonic() - lost
            next_delay = min(delay * 2, self.max_delay)
            try:
                source = self._opener()
            except RealtimeError as e:
                why = str(e)
                log.info("%s: still unavailable after %.1f s (%s), retrying in %.1f s", self.name, waited, e, next_delay)
                delay = next_delay
                continue
            log.info("%s: reopened after %.1f s", self.name, waited)
            return source, next_delay

    def interrupt(self) -> None:
        """Stop waiting to reconnect (safe from another thread; the run is ending)."""
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        if self._inner is not None:
            self._inner.close()


class ImageSource(Source):
    """One image file or every image in a folder (sorted by name)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self._first = None
        if path.is_dir():
            self.kind = "folder"
            self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise RealtimeError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            self.kind = "image"
            self._files = [path]
            self._first: np.ndarray | None = _read_image(path)  # read once: its warnings once
            self.size = _image_size(self._first)
        self.frame_count = len(self._files)
        self.paths = [path, *self._files] if path.is_dir() else [path]
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self._files):
            try:
                image = self._first if self.kind == "image" and self._first is not None else _read_image(path)
                self._first = None
            except RealtimeError as e:
                if self.kind == "image":
                    raise
                self.skipped += 1
                log.warning("skipping %s", e)
                continue
            yield Frame(image, index, 0.0, path.name)


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR. libjpeg's own complaints (printed from C) are kept off
    stderr; a JPEG cut short is named in one warning instead."""
    with quiet_native_stderr():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise RealtimeError(f"{path}: not a readable image")
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(max(0, path.stat().st_size - 64))
        tail = f.read()
    if head == b"\xff\xd8" and b"\xff\xd9" not in tail:
        log.warning("%s: the JPEG file is cut short; its missing part is analysed as grey", path)
    return image


def _image_size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def _open_network(spec: str, options: dict, cancel: threading.Event | None):
    """``av.open`` of a URL (10 s time-outs to connect and to read) on a thread of its
    own: FFmpeg waits for the server inside C, where neither Ctrl-C nor ``cancel``
    reach it; the caller's wait here answers both at once (within 0.1 s). A container
    that opens after nobody waits for it any more is closed."""
    import av

    done: dict = {}
    given_up = threading.Event()

    def target() -> None:
        try:
            done["container"] = av.open(spec, options=options, timeout=(10.0, 10.0))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            done["error"] = e
        if given_up.is_set() and "container" in done:
            done["container"].close()

    opener = threading.Thread(target=target, name="open-stream", daemon=True)
    opener.start()
    try:
        while opener.is_alive():
            opener.join(0.1)  # a signal's handler runs between these waits
            if cancel is not None and cancel.is_set():
                raise RealtimeError("stopped while waiting for the stream to answer")
    finally:
        if opener.is_alive():
            given_up.set()
    if "error" in done:
        raise done["error"]
    return done["container"]


def _av_reason(e: Exception) -> str:
    import av

    if isinstance(e, av.ExitError):  # FFmpeg's "Immediate exit requested": our time-out fired
        return "no answer within 10 s (is the address right and the device on?)"
    return mask_credentials(getattr(e, "strerror", None) or str(e).splitlines()[0])


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


def open_source(spec: str | int, reconnect: float | None = 300.0) -> Source:
    """Open a camera index ("0"), a URL, an image, a folder of images or a video file.

    Cameras and live streams reconnect when they drop, for up to ``reconnect`` seconds
    per gap (None: for ever; 0: never). A URL whose server gives its duration or size
    (a file over HTTP) is read as a file: every frame, once."""
    text = str(spec).strip()
    if text.isdigit():
        opener: Callable[[], Source] = lambda: CameraSource(int(text))  # noqa: E731
    elif _URL.match(text) and not text.lower().startswith("file://"):
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
    if not path.exists():
        raise RealtimeError(f"input not found: {path}")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path)
    return VideoSource(str(path))
