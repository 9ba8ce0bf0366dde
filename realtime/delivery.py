"""Sending to the outside world without ever slowing the analysis.

An :class:`Outbox` is a bounded queue and a sender thread. The loop's sinks
(:class:`realtime.events.EventSink`) only put into the queue, which never waits: when
it is full its oldest item is dropped and counted. The thread sends what is queued
(MQTT: :mod:`realtime.mqtt`; webhooks: :mod:`realtime.webhook`), retrying with
exponential backoff while the receiver is down. One outbox serves every source of a
run; it closes when the last source's sink does, giving the queue a few seconds to
drain while the receiver is reachable.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class Backoff:
    """Delays between retries: ``first``, doubling up to ``most`` seconds, with up to
    25% jitter (so many clients do not retry in step); ``reset()`` after a success."""

    def __init__(self, first: float = 0.5, most: float = 30.0):
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.most, self.delay * 2)
        return delay * (1 + random.random() / 4)

    def reset(self) -> None:
        self.delay = self.first


class Outbox:
    """A bounded FIFO drained by a sender thread (:meth:`_send_loop`, a subclass's).

    Args:
        name: what to call the receiver in logs (credentials masked).
        capacity: items that may wait; one more drops the oldest (``dropped``).
        flush_timeout: seconds :meth:`close` waits for the queue to drain while the
            receiver is reachable (an unreachable one gets no wait: the run ends at once);
            the whole close takes at most this long.
    """

    kind = "outbox"

    def __init__(self, name: str, capacity: int = 1000, flush_timeout: float = 5.0):
        self.name, self.capacity, self.flush_timeout = name, capacity, flush_timeout
        self.queue: collections.deque = collections.deque()
        self.cond = threading.Condition()
        self.closing = False
        self.reachable = False
        self.sent = self.dropped = self.failures = 0
        self._users = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the loop's side: never waits
    def put(self, item: Any) -> None:
        with self.cond:
            if len(self.queue) >= self.capacity:
                self.queue.popleft()
                self.dropped += 1
                if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: logged, not flooded
                    log.warning("%s %s: the queue is full (%d): dropped the oldest, %d so far", self.kind, self.name,
                                self.capacity, self.dropped)
            self.queue.append(item)
            self.cond.notify()

    def put_events(self, source: int, events: list[dict]) -> None:
        raise NotImplementedError

    def put_counts(self, source: int, counts: dict) -> None:
        """Periodic counts; receivers that take only events ignore them."""

    def attach(self) -> None:
        """A source's sink starts using the outbox (the first starts the thread)."""
        self._users += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name=f"{self.kind}-sender", daemon=True)
            self._thread.start()

    def detach(self) -> None:
        """A source's sink is done; the last one closes the outbox."""
        self._users -= 1
        if self._users <= 0:
            self.close()

    # -- the sender's side
    def take(self, most: int = 1, timeout: float = 0.5, linger: float = 0.0) -> list:
        """Up to ``most`` queued items, waiting up to ``timeout`` s for the first
        ([] on timeout or when closing with nothing left) and then up to ``linger`` s
        for more (fewer, larger batches)."""
        with self.cond:
            if not self.queue and not self.closing:
                self.cond.wait(timeout)
            if self.queue and linger > 0:
                end = time.monotonic() + linger
                while len(self.queue) < most and not self.closing and (left := end - time.monotonic()) > 0:
                    self.cond.wait(left)
            return [self.queue.popleft() for _ in range(min(most, len(self.queue)))]

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless closing; True when closing."""
        with self.cond:
            if not self.closing:
                self.cond.wait(seconds)
            return self.closing

    def pending(self) -> int:
        """Items not yet delivered (queued, and in a subclass's hands)."""
        return len(self.queue)

    def _send_loop(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        """After the sender stopped (a subclass's goodbye)."""

    def stats(self) -> dict[str, int]:
        """For /metrics: sent, dropped, failed attempts, waiting, reachable."""
        return {"sent": self.sent, "dropped": self.dropped, "failures": self.failures, "queued": self.pending(),
                "reachable": int(self.reachable)}

    def close(self) -> None:
        """Drain (up to ``flush_timeout`` s, while reachable), stop the thread, say
        what was not delivered. Once; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + self.flush_timeout
        while self.pending() and self.reachable and time.monotonic() < deadline and self._thread is not None and self._thread.is_alive():
            time.sleep(0.02)
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        if self._thread is not None:  # a sender stuck in a request is a daemon: left behind
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._shutdown()
        left = self.pending()
        if left or self.dropped:
            log.warning("%s %s: %d sent, %d not delivered at the end, %d dropped (queue full)", self.kind, self.name,
                        self.sent, left, self.dropped)
        else:
            log.info("%s %s: %d sent", self.kind, self.name, self.sent)
