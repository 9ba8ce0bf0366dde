"""The data path: source -> detector -> crops -> engine -> overlay/sinks.

``annotate`` (files) and ``run`` (live) differ only in their sinks; both go through
:func:`process`, the one loop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from engines.backends import Engine, Predictions, create_engine
from realtime.analytics import Analytics
from realtime.annotators import Annotator, default_annotators
from realtime.crops import Cropper
from realtime.detector import FaceDetector
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.sinks import VIDEO_SUFFIXES, ImageSink, JsonlSink, Sink, VideoSink, WindowSink, check_writable, has_display
from realtime.sources import IMAGE_SUFFIXES, Frame, Source, open_source
from realtime.threads import FrameQueue, start_worker
from realtime.timing import StageTimer, timed_iter
from realtime.tracker import Tracker, TrackerSettings

log = logging.getLogger(__name__)


@dataclass
class AnalyzerSettings:
    """How faces are found and classified.

    Attributes:
        model: a .safetensors checkpoint or .onnx file; None = the default model.
        backend: "auto" or an engine backend name (see ``engines.list_backends()``).
        detector_model: a MediaPipe .tflite file; None = resolve ``detector_range``.
        detector_range: "full" (crowds, up to ~5 m) or "short" (close faces).
        min_score: detector confidence threshold in [0, 1].
        tiles: "auto", "off" or N columns of overlapping detector tiles (small faces).
        crop_scale: crop side / box side; None = the model's own (``meta.crop_scale``).
        track: give faces track ids and smoothed labels (see :mod:`realtime.tracker`).
        tracker: matching, smoothing and re-classification settings when tracking.
    """

    model: str | Path | None = None
    backend: str = "auto"
    detector_model: str | Path | None = None
    detector_range: str = "full"
    min_score: float = 0.5
    tiles: str | int = "auto"
    crop_scale: float | None = None
    track: bool = True
    tracker: TrackerSettings = field(default_factory=TrackerSettings)


class Analyzer:
    """Detector + cropper + engine (+ tracker): a BGR frame in, classified :class:`Faces`
    out.

    All faces of a frame that need classifying go to the engine in one batched call."""

    def __init__(self, settings: AnalyzerSettings):
        self.detector = FaceDetector(settings.detector_model, settings.detector_range, settings.min_score, tiles=settings.tiles)
        self.engine: Engine = create_engine(settings.model, settings.backend)
        self.meta = self.engine.meta
        self.cropper = Cropper(self.meta, settings.crop_scale)
        self.tracker = Tracker(settings.tracker) if settings.track else None
        if not self.meta.trained:
            log.warning("the model is UNTRAINED: its age and gender labels are not predictions")

    def classify(self, image: np.ndarray, faces: Faces, timer: StageTimer) -> Predictions:
        with timer("crop"):
            crops = self.cropper.crop(image, faces)
        with timer("classify"):
            return self.engine.infer(crops)

    def __call__(self, image: np.ndarray, frame_index: int = 0, timer: StageTimer | None = None) -> Faces:
        timer = timer or StageTimer()
        with timer("detect"):
            faces = self.detector.detect(image, frame_index)
        if self.tracker is None:
            return faces.with_predictions(*self.classify(image, faces, timer))
        tracked = self.tracker.update(faces, frame_index, lambda subset: self.classify(image, subset, timer))
        return tracked.clipped(image.shape[1], image.shape[0])

    def close(self) -> None:
        self.detector.close()


@dataclass
class RunStats:
    """What a run did. ``faces_per_frame`` holds one count per processed frame."""

    source: str = ""
    frames: int = 0
    seconds: float = 0.0
    faces_per_frame: list[int] = field(default_factory=list)
    interrupted: bool = False
    outputs: list[str] = field(default_factory=list)
    dropped: int = 0
    people: str = ""
    timer: StageTimer = field(default_factory=StageTimer, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def faces(self) -> int:
        return sum(self.faces_per_frame)

    def summary(self) -> str:
        counts = self.faces_per_frame or [0]
        with_face = sum(1 for c in counts if c)
        line = (
            f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), {self.faces} faces "
            f"({np.mean(counts):.2f}/frame, max {max(counts)}, {with_face}/{self.frames} frames with a face)"
        )
        if self.dropped:
            line += f", {self.dropped} frames dropped to keep up"
        if self.people:
            line += f"; {self.people}"
        if self.outputs:
            line += " -> " + ", ".join(self.outputs)
        return line + (" [interrupted]" if self.interrupted else "")


FrameCallback = Callable[[Frame, Faces], None]


Analyze = Callable[[np.ndarray, int, StageTimer], Faces]


@contextlib.contextmanager
def graceful_stop(stop: threading.Event):
    """Turn the first SIGINT/SIGTERM into a request to stop after the current frame
    (it sets ``stop``), so every sink holds the same frames and closes properly; a
    second one interrupts at once. Yields an Event set when a signal came. Off the main
    thread signals cannot be caught, and Ctrl-C keeps its default behaviour there."""
    signalled = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield signalled
        return

    def handler(signum, frame):
        if signalled.is_set():
            raise KeyboardInterrupt
        signalled.set()
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signalled
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def passthrough(image: np.ndarray, frame_index: int = 0, timer: StageTimer | None = None) -> Faces:
    """An ``analyze`` that finds nothing: decode + encode only (bench's floor)."""
    return Faces.empty(frame_index)


def process(
    frames: Iterable[Frame],
    analyze: Analyze,
    annotators: list[Annotator],
    sinks: list[Sink],
    on_frame: FrameCallback | None = None,
    live: bool = False,
    queue_size: int = 4,
) -> RunStats:
    """The loop, on three threads joined by bounded queues: decode -> analyze -> draw
    and write (this thread, so a window and Ctrl-C live here). Each stage is timed per
    frame (``stats.timer``).

    Files go through every frame in order; a ``live`` source keeps only the newest
    frames (``stats.dropped`` counts the rest), so latency stays bounded. Ctrl-C stops
    it cleanly (the caller's ``with`` blocks close the sinks); a window sink may ask to
    stop (q or Esc)."""
    stats = RunStats()
    stop = threading.Event()
    decoded = FrameQueue(queue_size, stop, drop_oldest=live)
    analyzed = FrameQueue(queue_size, stop)

    def read() -> None:
        timer = StageTimer()
        for frame in timed_iter(frames, timer, "decode"):
            if not decoded.put((frame, None, timer.take_frame())):
                return

    def analyze_frames() -> None:
        timer = StageTimer()
        for frame, _, times in decoded:
            faces = analyze(frame.image, frame.index, timer)
            if not analyzed.put((frame, faces, {**times, **timer.take_frame()})):
                return

    workers = [start_worker(read, decoded), start_worker(analyze_frames, analyzed)]
    start = time.perf_counter()
    try:
        with graceful_stop(stop) as signalled:
            for frame, faces, times in analyzed:
                annotated = frame.image
                with stats.timer("draw"):
                    for annotator in annotators:
                        annotated = annotator.annotate(annotated, faces)
                with stats.timer("encode"):
                    for sink in sinks:
                        sink.write(frame, faces, annotated)
                stats.timer.add_frame({**times, **stats.timer.take_frame()})
                stats.frames += 1
                stats.faces_per_frame.append(len(faces))
                if on_frame is not None:
                    on_frame(frame, faces)
                if any(sink.stop_requested for sink in sinks) or signalled.is_set():
                    break
        stats.interrupted = signalled.is_set()
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    if stats.interrupted:
        log.warning("interrupted: outputs finished after %d frames", stats.frames)
    stats.seconds = time.perf_counter() - start
    stats.dropped = decoded.dropped
    return stats


def _run(source: Source, settings: AnalyzerSettings, sinks: list[Callable[[Source, Analyzer], Sink]],
         summary_path: str | Path | None, fps_overlay: bool,
         on_start: Callable[[Source], None] | None, on_frame: FrameCallback | None) -> RunStats:
    with contextlib.ExitStack() as stack:
        stack.enter_context(source)
        analyzer = Analyzer(settings)
        stack.callback(analyzer.close)
        opened = [stack.enter_context(make(source, analyzer)) for make in sinks]
        analytics = None
        if analyzer.tracker is not None:
            frame_seconds = 1.0 / source.fps if source.fps else 0.0
            analytics = stack.enter_context(Analytics(analyzer.meta, frame_seconds=frame_seconds, path=summary_path))
            opened.append(analytics)
        if on_start is not None:
            on_start(source)
        stats = process(source, analyzer, default_annotators(analyzer.meta, fps=fps_overlay), opened, on_frame, live=source.live)
    stats.source = source.name
    stats.outputs = [str(s.path) for s in opened if getattr(s, "path", None) is not None]
    if analytics is not None:
        stats.people = analytics.line()
    return stats


def check_outputs(source: Source, output: str | Path | None, *data_paths: str | Path | None) -> None:
    """Fail before any work if an output cannot be written or does not fit the source.
    ``data_paths`` are JSON files (None: not asked for; "-": stdout)."""
    if output is not None:
        if source.kind == "folder":
            out = Path(output)
            if out.exists() and not out.is_dir():
                raise RealtimeError(f"output {out}: a folder of images goes to a folder, not a file")
            check_writable(out / "x.jpg" if out.is_dir() else out, None, "output folder")
        elif source.kind == "image":
            check_writable(Path(output), IMAGE_SUFFIXES, "image output")
        else:
            check_writable(Path(output), VIDEO_SUFFIXES, "video output")
    for path in data_paths:
        if path is not None and str(path) != "-":
            check_writable(Path(path), None, "JSON output")


def _output_sink(output: str | Path) -> Callable[[Source, Analyzer], Sink]:
    def make(source: Source, analyzer: Analyzer) -> Sink:
        if source.kind in ("image", "folder"):
            return ImageSink(output, folder=source.kind == "folder")
        return VideoSink(output, source.fps)

    return make


def _data_sinks(output, json_path) -> list[Callable[[Source, Analyzer], Sink]]:
    sinks = [_output_sink(output)] if output is not None else []
    if json_path is not None:
        sinks.append(lambda source, analyzer: JsonlSink(json_path, analyzer.meta))
    return sinks


def _opened(spec: str | Path, reconnect: float | None, check: Callable[[Source], None]) -> Source:
    source = open_source(spec, reconnect)
    try:
        check(source)
    except RealtimeError:
        source.close()
        raise
    return source


def annotate(
    input: str | Path,
    output: str | Path,
    json_path: str | Path | None = None,
    settings: AnalyzerSettings | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_frame: FrameCallback | None = None,
    summary_path: str | Path | None = None,
) -> RunStats:
    """Annotate a video (-> mp4), an image (-> image) or a folder (-> folder of images),
    optionally writing per-frame JSON Lines and a people summary (JSON)."""

    def check(source: Source) -> None:
        if source.live:
            raise RealtimeError(f"{source.name}: annotate takes a file or folder; use `realtime run --source` for cameras and streams")
        check_outputs(source, output, json_path, summary_path)

    source = _opened(input, 0, check)
    return _run(source, settings or AnalyzerSettings(), _data_sinks(output, json_path), summary_path, False, on_start, on_frame)


def run(
    source_spec: str,
    output: str | Path | None = None,
    json_path: str | Path | None = None,
    show: bool | None = None,
    settings: AnalyzerSettings | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_frame: FrameCallback | None = None,
    reconnect: float | None = 300.0,
    summary_path: str | Path | None = None,
) -> RunStats:
    """Live: a camera, stream or file, shown in a window when a display exists (``show``
    None = if possible), optionally recorded to mp4, JSON Lines and a people summary,
    FPS on the overlay. A camera or stream that drops is reopened for up to
    ``reconnect`` seconds a gap."""
    if show is None:
        show = has_display()
        if not show:
            log.warning("no display found: running headless (no window)")
    elif show and not has_display():
        raise RealtimeError("--show: there is no display to open a window on (DISPLAY is not set)")

    def check(source: Source) -> None:
        if source.kind in ("image", "folder") and output is not None:
            raise RealtimeError(f"{source.name}: --output records video; use `realtime annotate` for images and folders")
        check_outputs(source, output, json_path, summary_path)

    source = _opened(source_spec, reconnect, check)
    window = [lambda src, an: WindowSink(f"realtime - {src.name}")] if show else []
    return _run(source, settings or AnalyzerSettings(), window + _data_sinks(output, json_path), summary_path, True, on_start, on_frame)
