"""The one loop (:func:`process`): sources -> analysis -> overlays and sinks on
threads joined by bounded queues, and what a run did (:class:`RunStats`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from realtime.annotators import Annotator
from realtime.faces import Faces
from realtime.signals import graceful_stop
from realtime.sinks import Sink
from realtime.sources import Frame
from realtime.threads import FrameQueue, start_worker
from realtime.timing import StageTimer, timed_iter

log = logging.getLogger(__name__)


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
    gave_up: list[str] = field(default_factory=list)  # the sources given up ("name: why")
    #: a stop signal came during the run: in its loop (then ``interrupted`` too) or after
    #: the last frame, while the outputs were finished
    signalled: bool = False
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
    decode (:func:`_decode`, a thread per source) -> analyze (:func:`_analyze`, one
    thread, one frame of every source per step, one classifier batch) -> draw and write
    (:func:`_draw_and_write`, this thread, so windows and Ctrl-C live here).
    ``annotators[k]`` and ``sinks[k]`` belong to ``streams[k]``. Each stage is timed per
    step (``stats.timer``).

    Files go through every frame in order; a ``live`` source keeps only its newest
    frames (``stats.dropped`` counts the rest), so latency stays bounded. Frames are 6
    MB each at 1080p, so few wait: one decoded frame per file (decoding is steady), up
    to ``queue_size`` analysed ones (2 absorb the detector's ups and downs; README:
    Memory); a stage waits for room downstream before it takes or decodes its
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
    workers = [start_worker(_decode, q, frames, q) for frames, q in zip(streams, decoded)]
    workers.append(start_worker(_analyze, analyzed, decoded, analyzed, analyze))
    start = time.perf_counter()
    try:
        with signals(stop):
            for step, found, times in analyzed:
                _draw_and_write(step, found, annotators, sinks, stats, on_frame)
                stats.timer.add_frame({**times, **stats.timer.take_frame()})
                del step, found  # drawn and written: no longer held while the next is awaited
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


def _decode(frames: Iterable[Frame], out: FrameQueue) -> None:
    """The decode stage of one source: (frame, its decode times) into ``out``, each
    decoded only once there is room for it, so no frame waits here."""
    timer = StageTimer()
    items = timed_iter(frames, timer, "decode")
    while out.wait_for_room():
        frame = next(items, None)
        if frame is None or not out.put((frame, timer.take_frame())):
            return
        del frame


def _analyze(decoded: list[FrameQueue], analyzed: FrameQueue, analyze: AnalyzeMany) -> None:
    """The analysis stage: one frame of every source still going per step, taken only
    once there is room downstream -> (step, faces, the step's stage times) into ``analyzed``."""
    timer = StageTimer()
    active = {k: iter(q) for k, q in enumerate(decoded)}
    while active:
        if not analyzed.wait_for_room():
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


def _draw_and_write(step: list[tuple[int, Frame]], found: list[Faces], annotators: list[list[Annotator]],
                    sinks: list[list[Sink]], stats: RunStats, on_frame: FrameCallback | None) -> None:
    """The last stage, for one step: each frame's overlays drawn, then written to its
    source's sinks, counted in ``stats`` and passed to ``on_frame``."""
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
