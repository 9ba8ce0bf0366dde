"""One file of ``realtime archive``, inside a Ray worker: decode, analyse and write its
results (frames never leave the worker), through the same path as ``realtime annotate``
(:func:`realtime.pipeline.annotate` with its sinks, the JSONL face records, the
``--summary`` content).

The analyzer (model and detector) is loaded once per worker process and kept for the
files that follow (:func:`_analyzer`). :func:`run_file` is the body of the Ray task: a
generator that reports ``start``, ``progress`` (frames so far) and ``done`` (the file's
:class:`~realtime.archive.results.FileResult`), small dicts only.

This module imports no Ray at import time; only :func:`_node_name` asks it where it runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from realtime.archive.results import FOLDERS, FileResult, Layout
from realtime.errors import RealtimeError
from realtime.analyzer import Analyzer, AnalyzerSettings
from realtime.pipeline import annotate
from realtime.sinks import ENCODER_LOOKAHEAD, ENCODER_THREADS
from realtime.sources import Frame, Source
from realtime.tables import TRACK_COLUMNS, TableSink, partial_path, track_rows, track_schema, write_atomic, write_rows
from realtime.wiring import OutputSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One file's work, sent to a worker (small: paths and settings).

    ``fault``: fault injection for the tests, ``ACTION@FRAME``: ``kill`` (SIGKILL this
    worker at that frame, every attempt), ``kill-once`` (the first attempt only) or
    ``hang`` (stop making progress)."""

    path: Path
    key: str
    out: Path
    settings: AnalyzerSettings = field(default_factory=AnalyzerSettings)
    sample_fps: float | None = None
    media: bool = False
    encoder_threads: int = ENCODER_THREADS
    encoder_lookahead: int | None = ENCODER_LOOKAHEAD
    fault: str | None = None


class SampledSource(Source):
    """``fps`` frames a second of ``inner`` (the first of each 1/fps interval); the
    tracker follows faces across the gaps. ``decoded`` counts every frame read."""

    def __init__(self, inner: Source, fps: float):
        super().__init__(inner.name)
        self.inner, self.every = inner, 1.0 / fps
        self.kind, self.live, self.paths, self.size = inner.kind, inner.live, inner.paths, inner.size
        self.fps = min(fps, inner.fps) if inner.fps else fps
        self.frame_count = inner.frame_count
        self.decoded = 0

    def __iter__(self) -> Iterator[Frame]:
        next_time = None
        for frame in self.inner:
            self.decoded += 1
            if next_time is None or frame.time >= next_time - 1e-6:
                next_time = (frame.time if next_time is None else next_time) + self.every
                while next_time <= frame.time:
                    next_time += self.every
                yield frame

    @property
    def decode_errors(self) -> int:
        return getattr(self.inner, "decode_errors", 0)

    def close(self) -> None:
        self.inner.close()


_loaded: tuple[str, Analyzer] | None = None


def _analyzer(settings: AnalyzerSettings) -> Analyzer:
    """This process's analyzer for ``settings``: loaded by the first file, kept."""
    global _loaded
    key = repr(settings)
    if _loaded is None or _loaded[0] != key:
        if _loaded is not None:
            _loaded[1].close()
            _loaded = None
        _loaded = (key, Analyzer(settings))
    return _loaded[1]


@functools.lru_cache(maxsize=1)
def _node_name() -> str:
    """``HOST ADDRESS NODE_ID`` of the Ray node this worker runs on (a direct call, outside
    Ray: the host name; Ray is never started from here)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return socket.gethostname()
    node_id = ray.get_runtime_context().get_node_id()
    address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "?")
    return f"{socket.gethostname()} {address} {node_id[:8]}"


def _fault(job: Job) -> tuple[str, int] | None:
    if not job.fault:
        return None
    action, _, frame = job.fault.partition("@")
    return action, int(frame or 0)


def _inject(job: Job, frame_index: int) -> None:
    """The tests' faults (see :class:`Job`)."""
    fault = _fault(job)
    if fault is None or frame_index != fault[1]:
        return
    action = fault[0]
    if action == "kill-once":
        marker = job.out / f".fault-{job.key}"
        if marker.exists():
            return
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        time.sleep(3600)


@dataclass
class _Progress:
    frames: int = 0
    expected: int | None = None


def archive_file(job: Job, progress: _Progress | None = None) -> FileResult:
    """Analyse ``job.path`` and write its results under ``job.out`` (each file under a
    temporary name, all renamed at the end): ``ok``, or ``failed`` with the reason and
    nothing written."""
    progress = progress or _Progress()
    layout = Layout(job.out)
    folders = FOLDERS if job.media else FOLDERS[:3]
    tmp = {f: partial_path(layout.result(f, job.key)) for f in folders}
    start = time.perf_counter()
    tables: list[TableSink] = []
    opened: list[Source] = []

    def faces_sink(source, analyzer, k, analytics=None):
        tables.append(TableSink(tmp["faces"], analyzer.meta, source=str(job.path)))
        return tables[-1]

    def wrap(source: Source) -> Source:
        opened.append(SampledSource(source, job.sample_fps) if job.sample_fps else source)
        return opened[-1]

    def decoded(frames: int) -> int:
        return opened[0].decoded if opened and isinstance(opened[0], SampledSource) else frames

    def on_start(source: Source) -> None:
        if source.kind != "video":
            raise RealtimeError(f"{source.name}: not a video ({source.kind})")
        progress.expected = source.frame_count

    def on_frame(frame: Frame, faces) -> None:
        progress.frames = decoded(progress.frames + 1)
        _inject(job, frame.index)

    out = OutputSettings(media=tmp.get("media"), summary=tmp["summary"], encoder_threads=job.encoder_threads,
                         encoder_lookahead=job.encoder_lookahead)
    try:
        stats = annotate(job.path, out, job.settings, on_start, on_frame, sinks=[faces_sink],
                         analyzer=_analyzer(job.settings), wrap=wrap)
        if stats.interrupted:
            raise RealtimeError("interrupted")
        frames = decoded(stats.frames)
        damaged = getattr(opened[0], "decode_errors", 0)
        if frames == 0:
            raise RealtimeError(f"{job.path}: no frame could be decoded")
        # packets that did not decode, a container broken part way, or a file cut short
        # (fewer frames than its header says: what VideoSource warns about)
        if damaged or (progress.expected and frames < progress.expected):
            raise RealtimeError(f"{job.path}: damaged: {frames} of {progress.expected or '?'} frames decoded")
        summary = json.loads(tmp["summary"].read_text()) if tmp["summary"].is_file() else None
        if summary is None:  # --no-track: no people, only counts
            summary = {"frames": stats.frames, "faces": stats.faces, "people": None, "tracks": []}
            write_atomic(tmp["summary"], json.dumps(summary, indent=2).encode())
        write_rows(tmp["tracks"], track_rows(summary, str(job.path), tables[0] if tables else None), TRACK_COLUMNS,
                   track_schema())
        for folder in ("faces", "tracks", "media", "summary"):  # the summary last: the file is done
            if folder in tmp:
                os.replace(tmp[folder], layout.result(folder, job.key))
        return FileResult("ok", frames=frames, frames_expected=progress.expected, faces=stats.faces,
                          people=summary.get("people"), node=_node_name(), seconds=time.perf_counter() - start,
                          peak_rss_mb=_peak_rss_mb())
    except (RealtimeError, OSError) as e:
        message = str(e) if isinstance(e, RealtimeError) else f"{job.path}: {e.strerror or e}"
        return FileResult("failed", frames=progress.frames, frames_expected=progress.expected, node=_node_name(),
                          seconds=time.perf_counter() - start, error=message, peak_rss_mb=_peak_rss_mb())
    finally:
        for table in tables:
            table.abandon()
        for path in tmp.values():
            with contextlib.suppress(OSError):
                path.unlink()


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


#: the one thread of this worker process that analyses its files, one after another:
#: a new thread per file would take a new malloc arena each time (the worker's peak
#: RSS grew ~30 MB a file)
_WORK = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")


def run_file(job: Job, report_every: float = 0.5) -> Iterator[dict]:
    """The Ray task: ``{"event": "start"}``, ``{"event": "progress", "frames": N}`` every
    ``report_every`` s, then ``{"event": "done", **FileResult}``. The work runs on the
    worker's analysis thread so that progress flows while it does; a bug in it (not a
    user's error) is raised here, as Ray's task error."""
    yield {"event": "start", "node": _node_name(), "pid": os.getpid()}
    progress = _Progress()
    done = _WORK.submit(archive_file, job, progress)
    while True:
        try:
            result = done.result(timeout=report_every)
            break
        except concurrent.futures.TimeoutError:
            yield {"event": "progress", "frames": progress.frames, "expected": progress.expected}
    yield {"event": "done", **result.to_dict()}
