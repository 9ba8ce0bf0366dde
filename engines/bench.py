"""Classifier throughput per backend, the engine part of ``realtime bench``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from engines.errors import RealtimeError
from engines.registry import Engine, create_engine, list_backends

log = logging.getLogger(__name__)


def measure_engine(engine: Engine, batch: int, seconds: float = 2.0, warmup: int = 3, crops: np.ndarray | None = None) -> dict:
    """Crops per second of ``engine.infer`` on batches of ``batch`` crops, after ``warmup``
    untimed calls. ``crops`` (any N) are tiled to the batch; default: seeded noise (the
    speed of these models does not depend on the pixels)."""
    s = engine.meta.input_size
    if crops is None:
        crops = np.random.default_rng(0).standard_normal((batch, 3, s, s), dtype=np.float32)
    x = np.ascontiguousarray(np.resize(crops, (batch, 3, s, s)), dtype=np.float32)
    for _ in range(warmup):
        engine.infer(x)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls == 0:
        engine.infer(x)
        calls += 1
    return {"backend": engine.name, "batch": batch, "crops_per_s": calls * batch / elapsed, "ms_per_batch": 1e3 * elapsed / calls}


def classifier_throughput(
    model: str | Path | None = None,
    backends: list[str] | None = None,
    batches: tuple[int, ...] = (1, 8, 32),
    seconds: float = 2.0,
    warmup: int = 3,
    crops: np.ndarray | None = None,
) -> list[dict]:
    """Measure every available backend (or ``backends``) on ``model`` at each batch size.

    Returns rows ``{"backend", "batch", "crops_per_s", "ms_per_batch"}``; a backend that
    is not installed or cannot load the model is skipped with a logged warning.
    """
    rows = []
    for name in backends or list_backends(available_only=True):
        try:
            engine = create_engine(model, backend=name)
        except RealtimeError as e:
            log.warning("bench: skipping %s: %s", name, e)
            continue
        for batch in batches:
            rows.append(measure_engine(engine, batch, seconds, warmup, crops))
            log.info("bench: %s batch %d: %.0f crops/s", name, batch, rows[-1]["crops_per_s"])
    return rows
