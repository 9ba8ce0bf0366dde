"""A live source that comes back when it drops: :class:`ReconnectingSource`."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable, Iterator

from realtime.errors import RealtimeError
from realtime.frames import Frame, Source

log = logging.getLogger(__name__)


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
