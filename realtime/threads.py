"""Bounded queues and worker threads for the pipeline's three stages."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

_END = object()


@dataclass
class _Failed:
    """A worker's exception, passed downstream to be raised in the main thread."""

    error: BaseException


class FrameQueue:
    """A bounded queue between two stages that stops when ``stop`` is set.

    ``drop_oldest``: when full, the oldest item is dropped (and counted) to make room,
    so a live source never waits on a slow consumer. Iterating yields items until the
    producer finishes; a producer's exception is re-raised in the consumer.
    """

    def __init__(self, maxsize: int, stop: threading.Event, drop_oldest: bool = False):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = stop
        self.drop_oldest = drop_oldest
        self.dropped = 0

    def put(self, item: Any, control: bool = False) -> bool:
        """Add ``item``; False if the pipeline stopped first. Control markers (end,
        failure) are never dropped."""
        if self._stop.is_set() and not control:
            return False
        if self.drop_oldest and not control:
            while True:
                try:
                    self._queue.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def wait_for_room(self) -> bool:
        """Block until :meth:`put` would not wait (at once for ``drop_oldest``); False
        once the pipeline stops. A producer that waits here before it makes its next
        item holds none while the queue is full (a 1080p frame is 6 MB)."""
        q = self._queue
        with q.not_full:
            while not self.drop_oldest and 0 < q.maxsize <= q._qsize():
                if self._stop.is_set():
                    return False
                q.not_full.wait(0.1)
        return not self._stop.is_set()

    def close(self, error: BaseException | None = None) -> None:
        self.put(_Failed(error) if error is not None else _END, control=True)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
            del item  # not held while waiting for the next


def start_worker(target: Callable[..., None], out: FrameQueue, *args) -> threading.Thread:
    """Run ``target(*args)`` on a daemon thread named after it; when it returns, ``out``
    is closed, and an exception it raises is passed on through ``out``."""

    def run() -> None:
        try:
            target(*args)
        except BaseException as e:  # handed to the consumer, which re-raises it
            out.close(e)
        else:
            out.close()

    thread = threading.Thread(target=run, name=target.__name__, daemon=True)
    thread.start()
    return thread
