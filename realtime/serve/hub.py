"""What `realtime serve` shows, fed by the one pipeline loop and never slowing it.

:class:`Hub` gives the loop one sink per source (:meth:`Hub.sink`). The sink only
keeps references to the newest annotated frame and its :class:`Faces` and updates the
counts; a publisher thread encodes the newest frame to JPEG once (only while someone
watches) and hands it, and each frame's JSONL record, to the viewers. Every viewer
has a small bounded queue that drops its oldest item when the viewer is slow.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import cv2
import numpy as np

from engines.meta import ModelMeta
from realtime.analytics import Analytics
from realtime.faces import Faces
from realtime.jsonl import frame_record
from realtime.sinks import Sink
from realtime.sources import Frame, Source, open_source
from realtime.timing import StageTimer

log = logging.getLogger(__name__)

#: the kinds of viewer: MJPEG video, Server-Sent Events of per-frame results
VIDEO, EVENTS = "video", "events"
#: the MJPEG stream's multipart boundary
BOUNDARY = "frame"
#: events a viewer may have waiting (they are small; a slower client skips frames)
EVENT_QUEUE = 64


def mjpeg_part(jpeg: bytes) -> bytes:
    """One JPEG as a part of the multipart/x-mixed-replace stream."""
    return b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (BOUNDARY.encode(), len(jpeg), jpeg)


class Viewer:
    """One connected client's bounded queue (lives on the server's event loop).

    ``offer`` never waits: when the queue is full the oldest item is dropped and
    counted, so a slow viewer sees fewer frames and nobody else notices."""

    def __init__(self, size: int):
        self.queue: asyncio.Queue = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, item: bytes | None) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class Replay(Source):
    """A video file served like a camera: at its own frame rate (``pace``; then it is
    live, and frames analysis cannot keep up with are dropped) and/or from the start
    again when it ends (``loop``). Frames are numbered on across loops, and their
    times run on."""

    def __init__(self, source: Source, reopen: Callable[[], Source], pace: bool, loop: bool):
        super().__init__(source.name)
        self._inner, self._reopen = source, reopen
        self.kind, self.live, self.pace, self.loop = source.kind, pace, pace, loop
        self.fps, self.size = source.fps, source.size
        self.frame_count = None if loop else source.frame_count
        self.loops = 0

    def __iter__(self) -> Iterator[Frame]:
        index, offset, step = 0, 0.0, 1.0 / (self.fps or 25.0)
        start = time.monotonic()
        while True:
            last = -step
            for frame in self._inner:
                last = frame.time
                if self.pace:
                    time.sleep(max(0.0, start + offset + frame.time - time.monotonic()))
                yield replace(frame, index=index, time=offset + frame.time)
                index += 1
            if not self.loop or index == 0:
                return
            offset += last + step
            self.loops += 1
            self._inner.close()
            self._inner = self._reopen()

    def close(self) -> None:
        self._inner.close()


def replay(pace: bool, loop: bool) -> Callable[[str, Source], Source]:
    """A ``wrap`` for :func:`realtime.pipeline.run`: video files become :class:`Replay`."""

    def wrap(spec: str, source: Source) -> Source:
        if source.kind != "video" or not (pace or loop):
            return source
        return Replay(source, lambda: open_source(spec, 0), pace, loop)

    return wrap


@dataclass
class Feed:
    """One source as the server sees it. Written by the loop's thread (``update``),
    read by the server's; ``lock`` guards the counts, ``analytics.lock`` the run's
    Analytics of the source."""

    index: int
    source: Source
    meta: ModelMeta
    analytics: Analytics | None
    history_minutes: int = 10
    video: bool = True
    state: str = "running"
    frames: int = 0
    faces_total: int = 0
    dropped: int = 0
    latest: tuple[int, Frame, Faces, np.ndarray] | None = None
    jpeg: tuple[int, bytes] | None = None
    viewers: dict[str, set[Viewer]] = field(default_factory=lambda: {VIDEO: set(), EVENTS: set()})
    viewer_dropped: int = 0
    stalled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=120), repr=False)
    _minutes: dict[int, set[int]] = field(default_factory=dict, repr=False)
    _events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64), repr=False)
    _last_index: int = -1

    def update(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        """The loop's side: keep references and count (no encoding here)."""
        now = time.monotonic()
        with self.lock:
            if self._last_index >= 0 and frame.index > self._last_index + 1:
                self.dropped += frame.index - self._last_index - 1
            self._last_index = frame.index
            self.frames += 1
            self.faces_total += len(faces)
            self._times.append(now)
            if faces.track_ids is not None:
                minute = int(time.time() // 60)
                self._minutes.setdefault(minute, set()).update(faces.track_ids.tolist())
                for old in [m for m in self._minutes if m <= minute - self.history_minutes]:
                    del self._minutes[old]
        self.latest = (self.frames, frame, faces, annotated if self.video else None)
        if self.viewers[EVENTS]:
            self._events.append((frame, faces))

    @property
    def fps(self) -> float:
        """Frames analysed per second over the last 3 s (0 when none came)."""
        now = time.monotonic()
        times = [t for t in list(self._times) if now - t <= 3.0]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def encode(self, quality: int) -> bytes | None:
        """The newest annotated frame as JPEG, encoded once per frame and shared."""
        latest, cached = self.latest, self.jpeg
        if latest is None or latest[3] is None:
            return None
        if cached is not None and cached[0] == latest[0]:
            return cached[1]
        ok, data = cv2.imencode(".jpg", latest[3], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            return None
        self.jpeg = (latest[0], data.tobytes())
        return self.jpeg[1]

    def take_events(self) -> list[bytes]:
        """Server-Sent Events for the frames since the last call."""
        out = []
        while self._events:
            frame, faces = self._events.popleft()
            record = frame_record(frame, faces, self.meta)
            out.append(f"id: {frame.index}\ndata: {json.dumps(record)}\n\n".encode())
        return out

    def record(self) -> dict | None:
        """The newest frame's JSONL record."""
        latest = self.latest
        return frame_record(latest[1], latest[2], self.meta) if latest else None

    def status(self, detail: bool = False) -> dict:
        """What the page shows: rates, counts, and (``detail``) the current tracks and
        people per minute."""
        latest = self.latest
        faces = latest[2] if latest else Faces.empty()
        out = {
            "id": self.index, "name": self.source.name, "kind": self.source.kind, "live": self.source.live,
            "state": self.state, "fps": round(self.fps, 2), "frames": self.frames, "faces": self.faces_total,
            "in_view": len(faces), "dropped": self.dropped, "reconnects": getattr(self.source, "reconnects", 0),
            "size": list(latest[1].image.shape[1::-1]) if latest else self.source.size, "video": self.video,
            "viewers": {kind: len(v) for kind, v in self.viewers.items()},
            "tracking": self.analytics is not None,
        }
        if self.analytics is not None:
            with self.analytics.lock, self.lock:
                out["people"] = len(self.analytics.people())
                if detail:
                    out["people_per_minute"] = [{"minute": m * 60, "people": self.analytics.count_people(ids)}
                                                for m, ids in sorted(self._minutes.items())]
        if detail:
            record = frame_record(latest[1], faces, self.meta) if latest else {"faces": []}
            if self.analytics is not None:
                with self.analytics.lock:
                    for face in record["faces"]:
                        track = self.analytics.tracks.get(face.get("track_id"))
                        if track is not None:
                            face["dwell_seconds"] = round(track.dwell_seconds + self.analytics.frame_seconds, 2)
            out["tracks"] = record["faces"]
        return out

    def summary(self) -> dict | None:
        """The ``--summary`` content so far (None without tracking)."""
        if self.analytics is None:
            return None
        return self.analytics.summary()


class _ServeSink(Sink):
    """The loop's side of a feed."""

    def __init__(self, hub: "Hub", feed: Feed):
        self.hub, self.feed = hub, feed

    def write(self, frame: Frame, faces: Faces, annotated: np.ndarray) -> None:
        self.feed.update(frame, faces, annotated)
        self.hub.wake.set()

    def close(self) -> None:
        self.feed.state = "ended"
        self.hub.wake.set()


class Hub:
    """The feeds of all sources, their viewers, and the publisher thread between.

    Args:
        jpeg_quality: of the MJPEG stream (1-100).
        queue_size: frames a video viewer may have waiting before its oldest is dropped.
        stall_timeout: a viewer that takes no data for this many seconds is dropped.
        stream_fps: at most this many frames a second are encoded and sent to video
            viewers (a file analysed faster than real time is not streamed faster).
        video: False: no frame is kept, encoded or served (``--no-video``).
        outboxes: the run's MQTT/webhook outboxes, for /metrics.
    """

    def __init__(self, jpeg_quality: int = 80, queue_size: int = 2, stall_timeout: float = 10.0, stream_fps: float = 30.0,
                 video: bool = True, outboxes: list | None = None):
        self.jpeg_quality, self.queue_size, self.stall_timeout = jpeg_quality, queue_size, stall_timeout
        self.stream_fps, self.video = stream_fps, video
        self.outboxes = outboxes or []
        self.feeds: list[Feed] = []
        self.timer = StageTimer()
        self.wake = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._publish, name="serve-publisher", daemon=True)

    def sink(self, source: Source, analyzer, k: int, analytics: Analytics | None) -> Sink:
        """A :data:`realtime.wiring.SinkFactory`: the feed of source ``k``, reading the
        run's own ``analytics`` of it (written by the loop, read here under its lock)."""
        feed = Feed(k, source, analyzer.meta, analytics, video=self.video)
        self.feeds.append(feed)
        return _ServeSink(self, feed)

    def stage_seconds(self, frames: int = 100) -> dict[str, float]:
        """Mean seconds per frame of each stage over the last ``frames`` frames."""
        recent = {stage: values[-frames:] for stage, values in list(self.timer.samples.items())}
        return {stage: float(np.mean(values)) for stage, values in recent.items() if values}

    def feed(self, k: int) -> Feed | None:
        feeds = self.feeds
        return feeds[k] if 0 <= k < len(feeds) else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called on the server's event loop once it runs."""
        self.loop = loop
        self._thread.start()

    def subscribe(self, feed: Feed, kind: str) -> Viewer:
        """On the event loop: a new viewer of ``kind``; video viewers get the newest
        frame at once (also after the source ended)."""
        viewer = Viewer(self.queue_size if kind == VIDEO else EVENT_QUEUE)
        feed.viewers[kind].add(viewer)
        if kind == VIDEO and feed.jpeg is not None:
            viewer.offer(mjpeg_part(feed.jpeg[1]))
        self.wake.set()
        return viewer

    def unsubscribe(self, feed: Feed, kind: str, viewer: Viewer, stalled: bool = False) -> None:
        feed.viewers[kind].discard(viewer)
        feed.viewer_dropped += viewer.dropped
        feed.stalled += stalled

    def _publish(self) -> None:
        """The publisher thread: encode and hand out what the loop produced."""
        sent: dict[int, int] = {}
        due: dict[int, float] = {}
        wait = 0.5
        while not self._closed:
            self.wake.wait(wait)
            self.wake.clear()
            wait = 0.5
            for feed in list(self.feeds):
                latest = feed.latest
                if latest is not None and feed.viewers[VIDEO] and sent.get(feed.index) != latest[0]:
                    now = time.monotonic()
                    if now < due.get(feed.index, 0.0):  # not yet: come back for the newest frame then
                        wait = min(wait, due[feed.index] - now)
                        continue
                    data = feed.encode(self.jpeg_quality)
                    if data is not None:
                        sent[feed.index], due[feed.index] = latest[0], now + 1.0 / self.stream_fps
                        self._broadcast(feed, VIDEO, [mjpeg_part(data)])
                if feed.viewers[EVENTS]:
                    events = feed.take_events()
                    if events:
                        self._broadcast(feed, EVENTS, events)

    def _broadcast(self, feed: Feed, kind: str, items: list[bytes | None]) -> None:
        def deliver() -> None:
            for viewer in list(feed.viewers[kind]):
                for item in items:
                    viewer.offer(item)

        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(deliver)

    def close(self) -> None:
        """End every viewer's stream (so the server can stop) and the publisher."""
        self._closed = True
        self.wake.set()
        for feed in self.feeds:
            for kind in (VIDEO, EVENTS):
                self._broadcast(feed, kind, [None])
