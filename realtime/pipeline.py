"""The data path: source -> detector -> crops -> engine -> overlay/sinks.

``annotate`` (files) and ``run`` (live) differ only in their sinks; both go through
:func:`process`, the one loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from engines.backends import Engine, FlipAveraged, Predictions, create_engine
from realtime.analytics import Analytics
from realtime.annotators import Annotator, default_annotators
from realtime.crops import Cropper
from realtime.detector import FaceDetector
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.outputs import OutputLock, claim_outputs
from realtime.sinks import (
    ENCODER_LOOKAHEAD,
    ENCODER_THREADS,
    VIDEO_SUFFIXES,
    ImageSink,
    JsonlSink,
    Sink,
    VideoSink,
    WindowSink,
    check_writable,
    has_display,
)
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
        flip: average each face's predictions with its mirror image's (test-time flip).
        track: give faces track ids and smoothed labels (see :mod:`realtime.tracker`);
            None = for videos, cameras and streams but not for images and folders of
            photos (unrelated pictures: a track would carry one person's label to
            another); True also tracks across a folder (an image sequence).
        tracker: matching, smoothing and re-classification settings when tracking.
    """

    model: str | Path | None = None
    backend: str = "auto"
    detector_model: str | Path | None = None
    detector_range: str = "full"
    min_score: float = 0.5
    tiles: str | int = "auto"
    crop_scale: float | None = None
    flip: bool = True
    track: bool | None = None
    tracker: TrackerSettings = field(default_factory=TrackerSettings)


@dataclass
class OutputSettings:
    """Where :func:`annotate` and :func:`run` write; None = not written.

    Attributes:
        media: annotated output: .mp4 for a video or live source, an image file for an
            image, a folder for a folder of images. With several sources put
            ``{source}`` in every path (it becomes the source's number).
        json: per-frame results as JSON Lines (``"-"``: stdout).
        summary: people counts by age group and gender, dwell times, flicker (JSON).
        show: open a window per source (``run`` only; None = when a display exists).
        encoder_threads: libx264 threads for ``media`` video, each encoding a slice of
            every frame; 0 = x264's own frame threads (1.5 per core: ~65 MB more at 1080p).
        encoder_lookahead: frames libx264 looks ahead for rate control; None = the
            preset's (10: ~35 MB more at 1080p, files ~8% larger at slightly higher quality).
        blur: blur every face in everything drawn (the media, the window, what a sink
            shows); the JSONL and the counts are unchanged.
    """

    media: str | Path | None = None
    json: str | Path | None = None
    summary: str | Path | None = None
    show: bool | None = None
    encoder_threads: int = ENCODER_THREADS
    encoder_lookahead: int | None = ENCODER_LOOKAHEAD
    blur: bool = False


class Analyzer:
    """Detector + cropper + engine (+ a tracker per source): frames in, classified
    :class:`Faces` out.

    The faces of all frames given together (one per source) that need classifying go
    to the engine in ONE batched call. In a notebook::

        from realtime import Analyzer, AnalyzerSettings
        with Analyzer(AnalyzerSettings()) as analyzer:
            for frame, faces in analyzer.stream("samples/people.mp4"):
                print(frame.index, [analyzer.meta.age_labels[k] for k in faces.age_classes])
    """

    def __init__(self, settings: AnalyzerSettings):
        self.engine: Engine = create_engine(settings.model, settings.backend)
        if settings.flip:
            self.engine = FlipAveraged(self.engine)
        self.meta = self.engine.meta
        self.cropper = Cropper(self.meta, settings.crop_scale)
        # last: nothing after it can fail, so a bad model file never leaves a detector
        # to be closed by the garbage collector (inside MediaPipe that can deadlock)
        self.detector = FaceDetector(settings.detector_model, settings.detector_range, settings.min_score, tiles=settings.tiles)
        self.tracking = settings.track is not False
        self._tracker_settings = settings.tracker
        self.trackers: dict[int, Tracker] = {}
        if not self.meta.trained:
            log.warning("the model is UNTRAINED: its age and gender labels are not predictions")

    def tracker(self, stream: int = 0) -> Tracker:
        if stream not in self.trackers:
            self.trackers[stream] = Tracker(self._tracker_settings)
        return self.trackers[stream]

    def analyze(self, frames: list[tuple[int, Frame]], timer: StageTimer | None = None) -> list[Faces]:
        """(stream, frame) pairs -> each frame's Faces, in order."""
        timer = timer or StageTimer()
        with timer("detect"):
            found = [self.detector.detect(f.image, f.index) for _, f in frames]
        plans = [self.tracker(k).match(faces, f.index) for (k, f), faces in zip(frames, found)] if self.tracking else None
        todo = [p.faces[p.due] for p in plans] if plans is not None else found
        with timer("crop"):
            crops = [self.cropper.crop(f.image, faces) for (_, f), faces in zip(frames, todo)]
        with timer("classify"):
            out = self.engine.infer(np.concatenate(crops))
        splits = np.cumsum([len(c) for c in crops])[:-1]
        parts = [Predictions(*p) for p in zip(*(np.split(o, splits) for o in out))]
        if plans is None:
            return [faces.with_predictions(*p) for faces, p in zip(found, parts)]
        return [
            self.tracker(k).apply(plan, part if len(part.age_probs) else None).clipped(f.image.shape[1], f.image.shape[0])
            for (k, f), plan, part in zip(frames, plans, parts)
        ]

    def __call__(self, image: np.ndarray, frame_index: int = 0, timer: StageTimer | None = None) -> Faces:
        """One frame of one source."""
        return self.analyze([(0, Frame(image, frame_index, 0.0))], timer)[0]

    def stream(self, source: str | int | Path | Source, reconnect: float | None = 300.0) -> Iterator[tuple[Frame, Faces]]:
        """Each frame of ``source`` (anything :func:`open_source` takes, or an open
        :class:`Source`) with its classified (and, when tracking, tracked) faces, on
        this thread. A source opened here is closed when the loop ends."""
        opened = not isinstance(source, Source)
        src = open_source(source, reconnect) if opened else source
        try:
            for frame in src:
                yield frame, self.analyze([(0, frame)])[0]
        finally:
            if opened:
                src.close()

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


@contextlib.contextmanager
def _signals_to(handler: Callable) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` inside the block (the main thread only:
    elsewhere signals cannot be caught and keep their default behaviour)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _request_stop(stop: threading.Event) -> Callable:
    """A signal handler that sets ``stop``; later signals are only noted."""

    def handler(signum, frame) -> None:
        if stop.is_set():
            log.warning("already stopping: finishing the outputs")
            return
        stop.set()

    return handler


@contextlib.contextmanager
def graceful_stop(stop: threading.Event) -> Iterator[threading.Event]:
    """Turn SIGINT/SIGTERM into a request to stop after the current frame (it sets
    ``stop``), so every sink holds the same frames and closes properly; more signals
    change nothing (the loop checks ``stop`` at least every 0.1 s, so it is prompt).
    Yields ``stop``."""
    with _signals_to(_request_stop(stop)):
        yield stop


def passthrough(frames: list[tuple[int, Frame]], timer: StageTimer | None = None) -> list[Faces]:
    """An ``analyze`` that finds nothing: decode + encode only (bench's floor)."""
    return [Faces.empty(f.index) for _, f in frames]


AnalyzeMany = Callable[[list[tuple[int, Frame]], StageTimer], list[Faces]]


def process(
    streams: list[Iterable[Frame]],
    analyze: AnalyzeMany,
    annotators: list[list[Annotator]],
    sinks: list[list[Sink]],
    on_frame: FrameCallback | None = None,
    live: list[bool] | None = None,
    queue_size: int = 2,
    stop: threading.Event | None = None,
    timer: StageTimer | None = None,
) -> RunStats:
    """The loop, for one or several sources, on threads joined by bounded queues:
    decode (a thread per source) -> analyze (one thread, one frame of every source per
    step, one classifier batch) -> draw and write (this thread, so windows and Ctrl-C
    live here). ``annotators[k]`` and ``sinks[k]`` belong to ``streams[k]``. Each stage
    is timed per step (``stats.timer``).

    Files go through every frame in order; a ``live`` source keeps only its newest
    frames (``stats.dropped`` counts the rest), so latency stays bounded. Frames are 6
    MB each at 1080p, so few wait: one decoded frame per file (decoding is steady), up
    to ``queue_size`` analysed ones (2 absorb the detector's ups and downs; 1 costs ~4%
    fps on 2 cores); a stage waits for room downstream before it takes or decodes its
    next frame, so no frame waits in a stage's hands. Ctrl-C or
    SIGTERM stops it cleanly (the caller's ``with`` blocks close the sinks); a window
    sink may ask to stop (q or Esc); so does setting ``stop``. A caller that passes
    ``stop`` owns the signals (its handler sets ``stop``, as :func:`finishing_signals`
    does); otherwise the loop turns them into ``stop`` itself (:func:`graceful_stop`).
    ``timer``: where the stage times go (default: a new one), for a caller that reads
    them while the loop runs."""
    stats = RunStats(timer=timer) if timer is not None else RunStats()
    signals = graceful_stop if stop is None else lambda event: contextlib.nullcontext(event)
    stop = stop or threading.Event()
    live = live or [False] * len(streams)
    # a live source keeps at most 2 frames waiting: what is shown is at most ~2 frames old
    decoded = [FrameQueue(2 if is_live else 1, stop, drop_oldest=is_live) for is_live in live]
    analyzed = FrameQueue(queue_size, stop)

    def reader(frames: Iterable[Frame], out: FrameQueue) -> Callable[[], None]:
        def read() -> None:
            timer = StageTimer()
            items = timed_iter(frames, timer, "decode")
            while out.wait_for_room():  # room first, then decode: no frame waits here
                frame = next(items, None)
                if frame is None or not out.put((frame, timer.take_frame())):
                    return
                del frame

        return read

    def analyze_frames() -> None:
        timer = StageTimer()
        active = {k: iter(q) for k, q in enumerate(decoded)}
        while active:
            if not analyzed.wait_for_room():  # then take a frame: none waits here
                return
            step, times = [], {}
            for k, queue in list(active.items()):
                item = next(queue, None)
                if item is None:
                    del active[k]
                    continue
                step.append((k, item[0]))
                times = {s: max(t, times.get(s, 0.0)) for s, t in item[1].items()}
            if not step:
                return
            faces = analyze(step, timer)
            if not analyzed.put((step, faces, {**times, **timer.take_frame()})):
                return
            del step, faces, item  # handed on

    workers = [start_worker(reader(frames, q), q) for frames, q in zip(streams, decoded)]
    workers.append(start_worker(analyze_frames, analyzed))
    start = time.perf_counter()
    try:
        with signals(stop):
            for step, found, times in analyzed:
                for (k, frame), faces in zip(step, found):
                    annotated = frame.image
                    with stats.timer("draw"):
                        for annotator in annotators[k]:
                            annotated = annotator.annotate(annotated, faces)
                    with stats.timer("encode"):
                        for sink in sinks[k]:
                            sink.write(frame, faces, annotated)
                    stats.frames += 1
                    stats.faces_per_frame.append(len(faces))
                    if on_frame is not None:
                        on_frame(frame, faces)
                stats.timer.add_frame({**times, **stats.timer.take_frame()})
                del step, frame, annotated  # drawn and written: no longer held while the next is awaited
                if stop.is_set() or any(sink.stop_requested for group in sinks for sink in group):
                    break
        stats.interrupted = stop.is_set()  # only signals set stop before the finally
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stop.set()
        for frames in streams:  # a source waiting to reconnect stops waiting
            getattr(frames, "interrupt", lambda: None)()
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                log.warning("a %s thread did not stop within 10 s", worker.name)
    if stats.interrupted:
        log.warning("interrupted: outputs finished after %d frames", stats.frames)
    stats.seconds = time.perf_counter() - start
    stats.dropped = sum(q.dropped for q in decoded)
    return stats


SinkFactory = Callable[[Source, Analyzer, int], Sink]


@contextlib.contextmanager
def finishing_signals(stop: threading.Event) -> Iterator[Callable[[], None]]:
    """SIGINT/SIGTERM as KeyboardInterrupt (start-up: nothing written yet) until the
    caller calls the yielded function; from then on they set ``stop`` (the loop ends
    after the current frame) and are otherwise only noted, so a storm of signals
    cannot cut an mp4 or a JSONL short while the outputs are finished. Off the main
    thread it does nothing."""
    running = threading.Event()
    request = _request_stop(stop)

    def handler(signum, frame) -> None:
        if not running.is_set():
            raise KeyboardInterrupt
        request(signum, frame)

    with _signals_to(handler):
        yield running.set


def _run(sources: list[Source], settings: AnalyzerSettings, sinks: list[SinkFactory],
         summary_path: str | Path | None, fps_overlay: bool,
         on_start: Callable[[Source], None] | None, on_frame: FrameCallback | None,
         timer: StageTimer | None = None, blur: bool = False) -> RunStats:
    stop = threading.Event()
    with finishing_signals(stop) as running, contextlib.ExitStack() as stack:
        for source in sources:
            stack.enter_context(source)
        if settings.track is None and any(s.kind in ("image", "folder") for s in sources):
            settings = dataclasses.replace(settings, track=False)
            if any(s.kind == "folder" for s in sources):
                log.info("a folder of photos: no tracking, smoothing or people counts across files (--track for an image sequence)")
        analyzer = Analyzer(settings)
        stack.callback(analyzer.close)
        opened = [[stack.enter_context(make(source, analyzer, k)) for make in sinks] for k, source in enumerate(sources)]
        analytics = []
        if analyzer.tracking:
            for k, source in enumerate(sources):
                frame_seconds = 1.0 / source.fps if source.fps else 0.0
                path = _numbered(summary_path, k, len(sources))
                analytics.append(stack.enter_context(Analytics(analyzer.meta, frame_seconds=frame_seconds, path=path)))
                opened[k].append(analytics[-1])
        if on_start is not None:
            for source in sources:
                on_start(source)
        annotators = [default_annotators(analyzer.meta, fps=fps_overlay, blur=blur) for _ in sources]
        running()
        stats = process(sources, analyzer.analyze, annotators, opened, on_frame, [s.live for s in sources], stop=stop, timer=timer)
    stats.source = ", ".join(s.name for s in sources)
    stats.outputs = sorted({str(s.path) for group in opened for s in group if getattr(s, "path", None) is not None})
    stats.people = "; ".join((f"source {k}: " if len(sources) > 1 else "") + a.line() for k, a in enumerate(analytics))
    return stats


def _numbered(path: str | Path | None, k: int, n: int) -> str | Path | None:
    """With several sources, ``{source}`` in an output path becomes the source's number."""
    if path is None or n == 1 or str(path) == "-":
        return path
    return str(path).replace("{source}", str(k))



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


def _data_sinks(out: OutputSettings, n: int = 1) -> list[SinkFactory]:
    """The annotated-output and JSONL sinks for each of ``n`` sources."""

    videos: dict[int, VideoSink] = {}

    def media(source: Source, analyzer: Analyzer, k: int) -> Sink:
        path = _numbered(out.media, k, n)
        if source.kind in ("image", "folder"):
            return ImageSink(path, folder=source.kind == "folder")
        videos[k] = VideoSink(path, source.fps, threads=out.encoder_threads, lookahead=out.encoder_lookahead)
        return videos[k]

    def jsonl(source: Source, analyzer: Analyzer, k: int) -> Sink:
        # lines follow the video's durable frames, so both always hold the same frames
        return JsonlSink(_numbered(out.json, k, n), analyzer.meta, source=k if n > 1 else None, follows=videos.get(k))

    return ([media] if out.media is not None else []) + ([jsonl] if out.json is not None else [])


def _claim(sources: list[Source], output, json_path, summary_path) -> OutputLock:
    """Check that no output is an input or another output, and lock them all (closing
    the sources if not)."""
    n = len(sources)
    outputs = []
    for k, source in enumerate(sources):
        for what, path in (("output folder" if source.kind == "folder" else "output", output),
                           ("--json", json_path), ("--summary", summary_path)):
            path = _numbered(path, k, n)
            if path is not None and str(path) != "-":
                outputs.append((what, Path(path)))
    try:
        return claim_outputs([p for source in sources for p in source.paths], outputs)
    except RealtimeError:
        for source in sources:
            source.close()
        raise


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
    output: OutputSettings | str | Path,
    settings: AnalyzerSettings | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_frame: FrameCallback | None = None,
    sinks: list[SinkFactory] = (),
) -> RunStats:
    """Annotate a video (-> mp4), an image (-> image) or a folder (-> folder of images),
    optionally writing per-frame JSON Lines and a people summary (JSON). ``output`` is
    an :class:`OutputSettings`, or just the annotated output's path; ``sinks``: more
    sink factories per source (e.g. :func:`realtime.integrations.event_sinks`)."""
    out = output if isinstance(output, OutputSettings) else OutputSettings(media=output)

    def check(source: Source) -> None:
        if source.live:
            raise RealtimeError(f"{source.name}: annotate takes a file or folder; use `realtime run --source` for cameras and streams")
        check_outputs(source, out.media, out.json, out.summary)

    source = _opened(input, 0, check)
    with _claim([source], out.media, out.json, out.summary):
        return _run([source], settings or AnalyzerSettings(), _data_sinks(out) + list(sinks), out.summary, False, on_start,
                    on_frame, blur=out.blur)


def run(
    source_spec: str | list[str],
    output: OutputSettings | None = None,
    settings: AnalyzerSettings | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_frame: FrameCallback | None = None,
    reconnect: float | None = 300.0,
    sinks: list[SinkFactory] = (),
    wrap: Callable[[str, Source], Source] | None = None,
    timer: StageTimer | None = None,
) -> RunStats:
    """Live: one or several cameras, streams or files, each shown in its own window when
    a display exists (``output.show`` None = if possible), optionally recorded to mp4,
    JSON Lines and a people summary (:class:`OutputSettings`), FPS on the overlay. With
    several sources the faces of all of them go to the classifier in one batch, and
    output paths need ``{source}`` (replaced by the source's number; JSON to ``-`` gains
    a ``source`` field). A camera or stream that drops is reopened for up to
    ``reconnect`` seconds a gap.

    For callers that add to a run (``realtime serve``): ``sinks`` are more sink
    factories per source, ``wrap(spec, source)`` may replace each opened source (e.g.
    to loop a file), ``timer`` receives the stage times as the loop runs."""
    out = output or OutputSettings()
    output, json_path, summary_path, show = out.media, out.json, out.summary, out.show
    specs = [source_spec] if isinstance(source_spec, (str, Path)) else list(source_spec)
    if not specs:
        raise RealtimeError("no --source given")
    n = len(specs)
    for path, what in ((output, "--output"), (json_path, "--json"), (summary_path, "--summary")):
        if n > 1 and path is not None and str(path) != "-" and "{source}" not in str(path):
            raise RealtimeError(f"{what} {path}: with several sources put {{source}} in the name (e.g. out_{{source}}.mp4)")
    if show is None:
        show = has_display()
        if not show:
            log.warning("no display found: running headless (no window)")
    elif show and not has_display():
        raise RealtimeError("--show: there is no display to open a window on (DISPLAY is not set)")

    sources: list[Source] = []
    try:
        for k, spec in enumerate(specs):

            def check(source: Source, k: int = k) -> None:
                if source.kind in ("image", "folder") and output is not None:
                    raise RealtimeError(f"{source.name}: --output records video; use `realtime annotate` for images and folders")
                check_outputs(source, _numbered(output, k, n), _numbered(json_path, k, n), _numbered(summary_path, k, n))

            source = _opened(spec, reconnect, check)
            sources.append(wrap(str(spec), source) if wrap is not None else source)
    except RealtimeError:
        for source in sources:
            source.close()
        raise
    window = [lambda src, an, k: WindowSink(f"realtime {k} - {src.name}")] if show else []
    with _claim(sources, output, json_path, summary_path):
        return _run(sources, settings or AnalyzerSettings(), window + _data_sinks(out, n) + list(sinks), summary_path,
                    True, on_start, on_frame, timer, blur=out.blur)
