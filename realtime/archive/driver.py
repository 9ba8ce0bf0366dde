"""The driver of ``realtime archive``: plan (resume), run one Ray task per file with
backpressure, retry workers that died, time out hung files, keep the manifest.

Ray is imported only in :mod:`~realtime.archive.cluster` (when there is work to do): the
runtime install (no Ray) never loads it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from realtime.archive.cluster import connect, require_cluster, stop
from realtime.archive.inputs import Input, expand_inputs
from realtime.archive.results import (
    FOLDERS,
    Layout,
    locked,
    read_manifest,
    read_run,
    run_record,
    settings_differ,
    write_run,
)
from realtime.archive.scheduler import Scheduler
from realtime.archive.settings import ArchiveSettings
from realtime.errors import RealtimeError

log = logging.getLogger(__name__)

@dataclass
class ArchiveReport:
    """What a run did: ``rows`` (this run's inputs' manifest rows), ``skipped`` (done
    before), ``failed_before`` (the manifest rows of inputs that failed in an earlier run
    and did not change since: not tried again without ``--force``)."""

    inputs: int = 0
    todo: list[Input] = field(default_factory=list)
    skipped: int = 0
    failed_before: list[dict] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)
    submitted: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows.values())

    def line(self) -> str:
        before = f", {len(self.failed_before)} failed before (not retried: --force)" if self.failed_before else ""
        if self.dry_run:
            return f"{self.inputs} files: {len(self.todo)} to do, {self.skipped} done already{before} (dry run: nothing started)"
        done = [r for r in self.rows.values() if r["status"] == "ok"]
        frames = sum(r["frames"] or 0 for r in done)
        states = ", ".join(f"{self.count(s)} {s}" for s in ("ok", "failed", "crashed", "timeout") if self.count(s) or s == "ok")
        line = (f"{self.inputs} files: {states}, {self.skipped} done already{before}; {frames} frames, "
                f"{sum(r['faces'] or 0 for r in done)} faces, {sum(r['people'] or 0 for r in done)} people in "
                f"{self.seconds:.1f} s ({frames / self.seconds if self.seconds else 0:.1f} frames/s)")
        return line + (" [interrupted]" if self.interrupted else "")

    def problems(self) -> list[str]:
        return ([f"{r['status']} {r['source']}: {r['error']}" for r in self.rows.values() if r["status"] != "ok"]
                + [f"failed before {r['source']}: {r['error']}" for r in self.failed_before])

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if all(r["status"] == "ok" for r in self.rows.values()) and not self.failed_before else 1


def _identity(path: Path | None, what: str) -> dict:
    from engines.files import file_sha256

    if path is None:
        return {"path": "untrained", "sha256": "untrained"}
    if not path.is_file():
        raise RealtimeError(f"{what} {path}: not found")
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


def _reid_identity(reid) -> str | None:
    """The re-identification model a run uses, by content: its sha256 (the default is
    found as the app finds it), ``dlib``, or None when re-identification is off or no
    model is found. Another model gives other people, so a rerun must not keep them."""
    from engines.files import file_sha256
    from realtime.embedders import reid_model

    found = reid_model(reid.model) if reid.enabled else None
    if found is None or found == "dlib":
        return found
    return file_sha256(found) if found.is_file() else None


def _plain(value):
    """JSON-able: a function (the tracker's cost) by its name."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if callable(value):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value) if isinstance(value, Path) else value


def describe(settings: ArchiveSettings) -> dict:
    """run.json: the app, the model's and the detector's sha256, every setting that changes results."""
    from engines.files import checkpoint_file
    from realtime.detector_models import resolve_detector_model

    a = settings.analyzer
    model = _identity(checkpoint_file(Path(a.model) if a.model else None), "--model")
    detector = _identity(resolve_detector_model(a.detector_range, a.detector_model), "--detector-model")
    analysis = _plain(dataclasses.asdict(dataclasses.replace(a, model=None, detector_model=None, track=a.track is not False)))
    analysis.update(sample_fps=settings.sample_fps, media=settings.media, reid_model=_reid_identity(a.reid))
    if settings.media:
        analysis.update(encoder_threads=settings.encoder_threads, encoder_lookahead=settings.encoder_lookahead)
    return run_record(model, detector, analysis)


def _done(row: dict | None, item: Input, layout: Layout, media: bool) -> bool:
    return _unchanged(row, item) and row["status"] == "ok" and layout.complete(item.key, media)


def _unchanged(row: dict | None, item: Input) -> bool:
    return row is not None and row["size"] == item.size and row["mtime_ns"] == item.mtime_ns


@dataclass
class Plan:
    """What a run will do: ``todo`` of ``inputs``; ``rows``: the manifest's rows to keep;
    ``record``: run.json's; ``failed_before``: rows of inputs not retried (see :func:`plan`)."""

    inputs: list[Input]
    todo: list[Input]
    rows: dict[str, dict]
    record: dict
    failed_before: list[dict]


def plan(specs: list[str], settings: ArchiveSettings) -> Plan:
    """Every input, and those to do: not done already (``ok``, unchanged, complete) and
    not ``failed`` in an earlier run of this app version on the same file unchanged (an
    unreadable or damaged file fails again); ``--force`` does them all."""
    layout = Layout(Path(settings.out))
    root = layout.root.resolve()
    inputs = [i for i in expand_inputs(specs) if not i.path.is_relative_to(root)]
    if not inputs:
        raise RealtimeError(f"every INPUT is inside --out {layout.root}: nothing to archive")
    record = describe(settings)
    old = read_run(layout)
    changes = settings_differ(old, record) if old is not None else []
    if changes and not settings.force:
        raise RealtimeError(f"--out {layout.root} holds results made with other settings ({'; '.join(changes[:3])}): "
                            "use --force to redo them with these, or another --out")
    rows = {} if changes else read_manifest(layout)
    same_app = old is not None and old.get("version") == record["version"]
    failed = [] if settings.force or not same_app else [
        rows[i.key] for i in inputs if _unchanged(rows.get(i.key), i) and rows[i.key]["status"] == "failed"]
    skip = {r["key"] for r in failed}
    todo = [i for i in inputs if i.key not in skip and (settings.force or not _done(rows.get(i.key), i, layout, settings.media))]
    return Plan(inputs, todo, rows, record, failed)


def archive(specs: list[str], settings: ArchiveSettings, progress: Callable | None = None) -> ArchiveReport:
    """Archive every INPUT (see :mod:`realtime.archive`). ``progress(report)`` returns a
    :class:`Progress`-like object (files and frames), or None for none."""
    require_cluster()
    layout = Layout(Path(settings.out))
    planned = plan(specs, settings)
    inputs, todo, rows, record = planned.inputs, planned.todo, planned.rows, planned.record
    report = ArchiveReport(inputs=len(inputs), todo=todo, skipped=len(inputs) - len(todo) - len(planned.failed_before),
                           failed_before=planned.failed_before, dry_run=settings.dry_run)
    if settings.dry_run:
        return report
    layout.create(settings.media)
    with locked(layout):
        layout.remove_partials()  # left by a run that was killed
        if read_run(layout) != record:
            write_run(layout, record)
        start = time.perf_counter()
        if todo:
            ray, ours = connect(settings, settings.workers)
            try:
                Scheduler(ray, settings, layout, rows, report, progress).run(todo)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the finished files stay, in-flight ones left nothing
                report.interrupted = True
            finally:
                if ours:
                    stop(ray)
        report.seconds = time.perf_counter() - start
        report.rows = {i.key: rows[i.key] for i in todo if i.key in rows}
    return report


__all__ = ["ArchiveReport", "ArchiveSettings", "Plan", "archive", "plan", "FOLDERS"]
