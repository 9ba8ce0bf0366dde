"""Where annotated frames and results go: an H.264 mp4, image files, a window (JSON
Lines: :mod:`realtime.jsonl`). Every sink is a context manager with ``write(frame, faces, annotated)`` that
finishes its file in ``__exit__``, so an interrupted run still leaves a playable mp4
and a JSONL that holds exactly the frames written."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import sys
from fractions import Fraction
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engines.writes import check_writable, write_atomic  # noqa: F401  (check_writable: used by the wiring)
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.sources import Frame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov"})


class Sink:
    """Base: a context manager that receives every processed frame."""

    #: set by a sink (a window) when the user asks to stop
    stop_requested: bool = False

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SinkChain(Sink):
    """Sinks written in order and closed in order, each close attempted: a video and
    the JSON Lines that follow it (:func:`follow`) close video first, so its last
    frames are durable before the last lines are written."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        for sink in self.sinks:
            sink.write(frame, faces, annotated)

    def close(self) -> None:
        with contextlib.ExitStack() as stack:
            for sink in reversed(self.sinks):  # the stack runs them last-in first
                stack.callback(sink.close)


def follow(video: "VideoSink | None", lines=None, table=None) -> SinkChain:
    """The explicit contract between a video and the records beside it, the JSON Lines
    (:class:`realtime.jsonl.JsonlSink`) and the per-face table
    (:class:`realtime.tables.TableSink`): the video reports each new count of durable
    frames (:attr:`VideoSink.on_durable`) and both are told (``durable``), so they hold
    the frames it plays; when the JSONL cannot be written, the video and the table are
    cut back to the frames it holds (``on_failure``). A table that cannot be written is
    left out whole (it is renamed into place only when complete) and cuts nothing.
    Returns them as one sink."""
    records = [r for r in (lines, table) if r is not None]
    if video is not None:
        for record in records:
            record.paced = True
        if lines is not None and not video.fragmented:  # it may lose frames it had claimed: the lines follow it back
            lines.keep_line_ends()
        video.on_durable = lambda frames: [record.durable(frames) for record in records]

    def cut(frames: int) -> str:
        held = [o for o in (video, table) if o is not None]
        for other in held:
            other.cut(frames)
        return " and ".join(o.path.name for o in held)

    if lines is not None and (video is not None or table is not None):
        lines.on_failure = cut
    return SinkChain(([video] if video is not None else []) + records)


def partial_path(path: str | Path) -> Path:
    """A hidden temporary name beside ``path`` with its suffix (``.NAME.TOKEN.partial.SUFFIX``):
    pyarrow, pandas and globs on ``*.parquet`` skip names that start with a dot."""
    path = Path(path)
    hidden = "" if path.name.startswith(".") else "."  # a partial's partial keeps its prefix
    return path.with_name(f"{hidden}{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")


#: libx264 defaults of annotated videos: slice threads and rate-control lookahead (see VideoSink).
ENCODER_THREADS = 2
ENCODER_LOOKAHEAD = 5


class VideoSink(Sink):
    """H.264 video through PyAV/libx264, the source's size, written to play whatever
    happens to the run.

    The stream opens on the first frame (its size and rotation fix the video's); odd
    sizes are kept by encoding 4:4:4 instead of 4:2:0. Each frame keeps its source time
    (``frame.time``), so a variable frame rate stays variable; a rotated source is
    written in its stored orientation with its display rotation, as it came.

    Memory: libx264 holds every frame of its lookahead and of each frame thread, ~6
    and ~10 MB each at 1080p. ``threads`` N > 0 encodes each frame as N slices on N
    threads (x264's sliced threads: no frames held per thread, ~1.5% larger files);
    0 = x264's own frame threads (1.5 per core). With ``threads=2`` and ``lookahead=5``
    (x264's veryfast: 10 frames) libx264 holds ~130 MB instead of ~230 MB at 1080p
    (README: Memory); ``lookahead`` None = the preset's.

    MP4 and MOV are fragmented: a keyframe every ``keyframe_seconds`` starts a fragment
    (2 s costs 6-11% in size on real clips against x264's 10 s default; 1 s, 14-21%),
    and each completed fragment is flushed to the file, so after SIGKILL, a crash or a
    full disk the file plays up to its last complete fragment. ``durable`` counts the
    frames that are in the file for good (all of them once closed), and each new count
    goes to ``on_durable`` (see :func:`follow`); a write error (ENOSPC, EIO, EFBIG)
    cuts the file back to them and raises one RealtimeError.
    """

    #: time base of the written timestamps (90 kHz, as MPEG): exact for 24, 25, 30,
    #: 50, 60 fps and their NTSC 1000/1001 variants
    TIME_BASE = Fraction(1, 90000)

    def __init__(self, path: str | Path, fps: float | None, crf: int = 23, preset: str = "veryfast",
                 keyframe_seconds: float = 2.0, threads: int = ENCODER_THREADS, lookahead: int | None = ENCODER_LOOKAHEAD):
        self.path = check_writable(Path(path), VIDEO_SUFFIXES, "video output")
        self.rate = Fraction(fps or 25.0).limit_denominator(1001)
        if not 0 <= threads <= 64:
            raise RealtimeError(f"encoder threads must be 0 (x264's choice) to 64, got {threads}")
        if lookahead is not None and not 0 <= lookahead <= 250:
            raise RealtimeError(f"encoder lookahead must be 0 to 250 frames, got {lookahead}")
        self.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
        if threads > 1:
            self.options["x264-params"] = "sliced-threads=1"
        if lookahead is not None:
            self.options["rc-lookahead"] = str(lookahead)
        self.keyframe_interval = max(1, round(float(self.rate) * keyframe_seconds))
        self.fragmented = self.path.suffix.lower() in (".mp4", ".mov")
        self._container = None
        self._stream = None
        self.frames = 0
        self.durable = 0
        self.on_durable: Callable[[int], None] | None = None
        self._muxed = 0
        self._last_pts = -1
        self._durable_bytes = 0
        self._cuts: dict[int, int] = {0: 0}  # durable frames -> file size at that fragment boundary
        self._file = self.path  # where it is being written (a temporary name until a frame is durable)
        self._error: str | None = None

    def _open(self, width: int, height: int, rotation: int) -> None:
        import av

        options = {"flush_packets": "1"}  # each completed fragment reaches the file at once
        if self.fragmented:
            options["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        # a new file under a temporary name, renamed to ``path`` once it holds a frame
        # for good: killed before that, the run leaves no empty video at ``path``
        self._file = partial_path(self.path)
        self._container = av.open(str(self._file), mode="w", options=options)
        stream = self._container.add_stream("libx264", rate=self.rate, options=self.options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.codec_context.time_base = self.TIME_BASE
        stream.codec_context.gop_size = self.keyframe_interval
        stream.thread_type = "AUTO"
        if rotation:
            stream.set_display_rotation(rotation)  # shown as the source was
        self._stream = stream

    def _mux(self, packet) -> None:
        # a keyframe closes the fragment before it: those packets (= frames, closed
        # GOPs) are now in the file
        boundary = self._muxed if packet.is_keyframe and self._muxed else None
        self._container.mux(packet)
        self._muxed += 1
        if boundary is not None and self.fragmented:
            self._durable_bytes = self._cuts[boundary] = os.path.getsize(self._file)
            self._publish()
            self._set_durable(boundary)
        elif not self.fragmented:
            self._publish()

    def _publish(self) -> None:
        """The file under its own name (once: it holds a frame for good)."""
        if self._file != self.path:
            os.replace(self._file, self.path)
            self._file = self.path

    def _set_durable(self, frames: int) -> None:
        self.durable = frames
        if self.on_durable is not None:
            self.on_durable(frames)

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        import av

        if self._error:
            return
        try:
            if frame.rotation:  # back to the source's stored orientation; the matrix turns it upright
                annotated = np.ascontiguousarray(np.rot90(annotated, -(frame.rotation // 90)))
            if self._container is None:
                self._open(annotated.shape[1], annotated.shape[0], frame.rotation)
            if annotated.strides[1:] != (3, 1):
                annotated = np.ascontiguousarray(annotated)
            # wrapped, not copied (6 MB at 1080p): the encoder reads it once, into YUV
            out = av.VideoFrame.from_numpy_buffer(annotated, format="bgr24")
            self._last_pts = out.pts = max(round(frame.time / self.TIME_BASE), self._last_pts + 1)
            out.time_base = self.TIME_BASE
            for packet in self._stream.encode(out):
                self._mux(packet)
        except (OSError, av.FFmpegError) as e:
            self._fail(e)
        self.frames += 1
        if not self.fragmented:
            self._set_durable(self._muxed)

    def _fail(self, error: Exception) -> None:
        """Stop writing, keep the complete fragments, raise one line."""
        self._error = getattr(error, "strerror", None) or str(error)
        self._abandon()
        if not self.fragmented:  # what the muxer had buffered is lost: count what is there
            self._set_durable(min(self.durable, _playable_frames(self._file)))
            if self.durable == 0:
                self._keep_durable()
        if self.durable == 0:
            raise RealtimeError(f"cannot write {self.path}: {self._error}; no frame was written, and no file is left")
        raise RealtimeError(f"cannot write {self.path}: {self._error}; it holds the first {self.durable} frames, which play")

    def cut(self, frames: int) -> None:
        """Stop writing and keep only the first ``frames`` frames (a fragment boundary
        reached earlier): when the JSONL beside it could hold no more, the two still
        agree."""
        if self.fragmented and frames in self._cuts:
            self._error = self._error or "cut to match the JSONL"
            self.durable, self._durable_bytes = frames, self._cuts[frames]
            if self._container is not None:
                self._abandon()
            else:
                self._keep_durable()

    def _abandon(self) -> None:
        import av

        container, self._container = self._container, None
        with contextlib.suppress(OSError, av.FFmpegError):
            container.close()
        if self.fragmented:
            self._keep_durable()

    def _keep_durable(self) -> None:
        """Cut the file back to its complete fragments; none: no file at all."""
        with contextlib.suppress(OSError):
            if self.durable == 0 or self._file != self.path:
                self._file.unlink()
            else:
                os.truncate(self.path, self._durable_bytes)

    def close(self) -> None:
        import av

        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._mux(packet)
            self._container.close()
            self._publish()
        except (OSError, av.FFmpegError) as e:
            self._fail(e)
        self._container = None
        self._set_durable(self.frames)
        log.info("wrote %d frames to %s", self.frames, self.path)


def _playable_frames(path: Path) -> int:
    """The frames a video file cut short holds (its complete packets, as a player
    reads them)."""
    import av

    count = 0
    with contextlib.suppress(OSError, av.FFmpegError), av.open(str(path)) as container:
        with contextlib.suppress(OSError, av.FFmpegError):
            for packet in container.demux(video=0):
                count += packet.size > 0 and not packet.is_corrupt
    return count


class ImageSink(Sink):
    """Annotated stills: to one file (one image in) or into a folder (a folder in)."""

    def __init__(self, path: str | Path, folder: bool):
        self.path = Path(path)
        self.folder = folder
        if folder:
            self.path.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        target = self.path / (frame.name or f"{frame.index:06d}.jpg") if self.folder else self.path
        ok, data = cv2.imencode(target.suffix or ".jpg", annotated)
        if not ok:
            raise RealtimeError(f"cannot encode image {target}")
        # a new file renamed into place: never written through a link in the output
        # folder (a hard link or symlink to an input), never left cut short
        write_atomic(target, data.tobytes(), "image output")
        self.frames += 1


def has_display() -> bool:
    """True when a window can be opened: OpenCV has a GUI backend and, on Linux, an X11
    or Wayland display is set. (cv2.imshow without one aborts the whole process.)"""
    info = cv2.getBuildInformation()
    gui = re.search(r"GUI:\s*(\S+)", info)
    if gui and gui.group(1).upper() == "NONE":
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink(Sink):
    """An on-screen window; q or Esc asks the run to stop. Only where has_display()."""

    def __init__(self, title: str = "realtime"):
        if not has_display():
            raise RealtimeError("no display to open a window on (DISPLAY is not set): run headless with --no-show")
        self.title = title

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        cv2.imshow(self.title, annotated)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        cv2.destroyWindow(self.title)
