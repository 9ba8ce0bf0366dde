"""The driver's loop: one Ray task per file, at most about twice the worker slots in
flight, each task's events (start, frames, done) read as they come.

What is retried: a file whose worker died (SIGKILL, segfault, out of memory, its node
lost), up to ``retries`` times, then ``crashed``. What is not: a file the worker could
not read (``failed``, with the reason), one that ran past ``file_timeout`` (``timeout``),
a bug in the worker (``failed``, with the exception's first line).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from realtime.archive.inputs import Input
from realtime.archive.results import Layout, write_manifest
from realtime.archive.settings import ArchiveSettings
from realtime.archive.worker import Job, run_file

log = logging.getLogger(__name__)

#: seconds between manifest writes while files finish (and once at the end)
MANIFEST_EVERY = 2.0
#: seconds the driver waits for an event before it checks time-outs again
POLL = 0.5


@dataclass
class _Running:
    item: Input
    attempt: int
    started: float | None = None
    frames: int = 0
    node: str = ""
    pid: int | None = None


def _capacity(ray, settings: ArchiveSettings) -> int:
    """Files the cluster's CPUs (and GPUs, when asked for) can take at once."""
    resources = ray.cluster_resources()
    slots = max(1, int(resources.get("CPU", 1) // settings.cpus_per_worker))
    if settings.gpus_per_worker:
        slots = min(slots, max(1, int(resources.get("GPU", 0) // settings.gpus_per_worker)))
    return slots


def _slots(ray, settings: ArchiveSettings) -> int:
    slots = _capacity(ray, settings)
    return min(slots, settings.workers) if settings.workers else slots


def job_of(item: Input, settings: ArchiveSettings) -> Job:
    fault = next((f for part, f in settings.faults.items() if part in item.path.name), None)
    return Job(item.path, item.key, Path(settings.out).resolve(), settings.analyzer, settings.sample_fps, settings.media,
               settings.encoder_threads, settings.encoder_lookahead, fault)


class Scheduler:
    """Runs ``todo`` on ``ray`` as ``settings`` say; ``rows`` (the manifest, by key) is updated as files end and written to
    ``layout.manifest`` every few seconds and at the end."""

    def __init__(self, ray, settings, layout: Layout, rows: dict[str, dict], report, progress: Callable | None):
        self.ray, self.settings, self.layout, self.rows, self.report = ray, settings, layout, rows, report
        self.slots = _slots(ray, settings)
        # --workers below what a joined cluster holds: no queue, else Ray would run them all
        below = settings.address is not None and settings.workers is not None and _capacity(ray, settings) > settings.workers
        self.limit = self.slots if below else 2 * self.slots
        # a worker process is replaced after files_per_worker files: what it keeps between
        # files (allocator arenas, caches) stays bounded on archives of thousands
        self.task = ray.remote(max_calls=settings.files_per_worker)(run_file).options(num_returns="streaming", max_retries=0, num_cpus=settings.cpus_per_worker,
                                                 num_gpus=settings.gpus_per_worker or None)
        self.make_job = job_of
        self.progress = progress
        self.running: dict = {}
        self.attempts: dict[str, int] = {}
        self._saved = time.monotonic()
        self._dirty = False

    def run(self, todo: list[Input]) -> None:
        bar = self.progress(len(todo)) if self.progress else None
        queue = deque(todo)
        try:
            while queue or self.running:
                while queue and len(self.running) < self.limit:
                    self._submit(queue.popleft())
                for gen in self._ready():
                    retry = self._advance(gen, bar)
                    if retry is not None:
                        queue.appendleft(retry)
                self._time_out(bar)
                self._save()
        except BaseException:
            self._cancel_all()
            self.report.interrupted = True
            raise
        finally:
            self._save(force=True)
            for item in todo:  # a stopped worker may have written a little more before it died
                if self.rows.get(item.key, {}).get("status") != "ok":
                    self.layout.remove_partials(item.key)
            if bar is not None:
                bar.close()

    def _submit(self, item: Input) -> None:
        attempt = self.attempts[item.key] = self.attempts.get(item.key, 0) + 1
        self.layout.remove_partials(item.key)  # of an attempt whose worker died
        gen = self.task.remote(self.make_job(item, self.settings))
        self.running[gen] = _Running(item, attempt)
        self.report.submitted += 1

    def _ready(self) -> list:
        gens = list(self.running)
        if not gens:
            return []
        ready, rest = self.ray.wait(gens, num_returns=1, timeout=POLL)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def _advance(self, gen, bar) -> Input | None:
        """Read one event of ``gen``; returns the input to try again when its worker died."""
        ray, run = self.ray, self.running[gen]
        try:
            event = ray.get(next(gen))
        except StopIteration:
            event = {"event": "done", "status": "crashed", "error": "the task ended without a result"}
        except ray.exceptions.TaskCancelledError:
            return None  # ours (a time-out): already recorded
        except ray.exceptions.RayTaskError as e:  # a bug in the worker: its own exception
            cause = e.cause if getattr(e, "cause", None) is not None else e
            event = {"event": "done", "status": "failed", "error": f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"}
        except ray.exceptions.RayError as e:  # the worker or its node died
            del self.running[gen]
            if run.attempt <= self.settings.retries:
                log.info("%s: worker died (%s): trying again", run.item.path, type(e).__name__)
                return run.item
            self._record(run, {"status": "crashed", "error": f"its worker died {run.attempt} times ({type(e).__name__}: "
                                                             f"{_first_line(e)})"}, bar)
            return None
        kind = event.get("event")
        if kind == "start":
            run.started, run.node, run.pid = time.monotonic(), event.get("node", ""), event.get("pid")
        elif kind == "progress" and bar is not None:
            bar.frames(event["frames"] - run.frames, event.get("expected"), run.item.key)
            run.frames = event["frames"]
        elif kind == "done":
            del self.running[gen]
            self._record(run, event, bar)
        return None

    def _record(self, run: _Running, result: dict, bar) -> None:
        item = run.item
        row = {"frames": run.frames, "faces": 0, "node": run.node, "pid": run.pid, **{k: v for k, v in result.items() if k != "event"}}
        row.update(key=item.key, source=str(item.path), attempts=run.attempt, size=item.size, mtime_ns=item.mtime_ns)
        row["seconds"] = row.get("seconds") or (time.monotonic() - run.started if run.started else 0.0)
        if row["status"] != "ok":
            self.layout.remove_partials(item.key)
        self.rows[item.key] = row
        self._dirty = True
        if bar is not None:
            bar.file_done(row)

    def _time_out(self, bar) -> None:
        limit = self.settings.file_timeout
        if not limit:
            return
        now = time.monotonic()
        for gen, run in list(self.running.items()):
            if run.started is not None and now - run.started > limit:
                self.ray.cancel(gen, force=True)
                del self.running[gen]
                self._record(run, {"status": "timeout", "error": f"still running after {limit:g} s (stopped)",
                                   "seconds": now - run.started}, bar)

    def _cancel_all(self) -> None:
        """Interrupted: stop every task in flight (their workers are killed) and remove
        what they had started to write."""
        gens = list(self.running)
        for gen in gens:
            try:
                self.ray.cancel(gen, force=True)
            except Exception as e:  # the cluster may be going away too
                log.debug("cancel: %s", e)
        if gens:
            try:
                self.ray.wait(gens, num_returns=len(gens), timeout=5)
            except Exception as e:
                log.debug("wait: %s", e)
        for run in self.running.values():
            self.layout.remove_partials(run.item.key)
        self.running.clear()

    def _save(self, force: bool = False) -> None:
        if self._dirty and (force or time.monotonic() - self._saved >= MANIFEST_EVERY):
            write_manifest(self.layout, self.rows)
            self._saved, self._dirty = time.monotonic(), False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""


__all__ = ["Scheduler", "Job"]
