"""Per-stage timing of the loop, for `realtime bench` and the run summary."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import numpy as np

#: The stages of one frame, in data-path order.
STAGES = ("decode", "detect", "crop", "classify", "draw", "encode")


class StageTimer:
    """Wall-clock seconds per stage and frame.

    ``with timer("detect"): ...`` adds to the current frame's total for that stage;
    ``end_frame()`` stores one sample per stage (0 for a stage the frame skipped, e.g.
    no face needed classifying). Means cover the whole run; percentiles and
    ``samples`` cover the last ``window`` frames or more (below ``2 * window``), so a
    live run of days keeps a bounded amount of memory."""

    def __init__(self, window: int = 20_000) -> None:
        self.window = window
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._current: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._current[stage] += time.perf_counter() - start

    def take_frame(self) -> dict[str, float]:
        """The current frame's totals, cleared here (to hand to another thread)."""
        times, self._current = dict(self._current), defaultdict(float)
        return times

    def add_frame(self, times: dict[str, float]) -> None:
        """Store one frame's totals as one sample per stage."""
        for stage in set(self.samples) | set(times):
            value, kept = times.get(stage, 0.0), self.samples[stage]
            kept.append(value)
            if len(kept) >= 2 * self.window:
                del kept[: len(kept) - self.window]  # amortised O(1) per frame
            self._sums[stage] += value
            self._counts[stage] += 1

    def end_frame(self) -> None:
        self.add_frame(self.take_frame())

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {"p50_ms", "p95_ms", "mean_ms"}} in data-path order."""
        order = [s for s in STAGES if s in self.samples] + sorted(set(self.samples) - set(STAGES))
        out = {}
        for stage in order:
            ms = np.asarray(self.samples[stage]) * 1e3
            out[stage] = {
                "p50_ms": round(float(np.percentile(ms, 50)), 3),
                "p95_ms": round(float(np.percentile(ms, 95)), 3),
                "mean_ms": round(1e3 * self._sums[stage] / self._counts[stage], 3),
            }
        return out


def timed_iter(items, timer: StageTimer, stage: str):
    """Yield from ``items``, timing how long each item takes to arrive."""
    iterator = iter(items)
    while True:
        with timer(stage):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item
        del item  # not held while the next one is made (a video frame: 6 MB at 1080p)
