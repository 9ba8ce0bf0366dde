"""How ``realtime archive`` runs: :class:`ArchiveSettings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from realtime.analyzer import AnalyzerSettings
from realtime.sinks import ENCODER_LOOKAHEAD, ENCODER_THREADS


@dataclass
class ArchiveSettings:
    """How ``realtime archive`` runs (the analysis itself: ``analyzer``).

    Attributes:
        out: the results folder (on a cluster: a path every node sees, e.g. NFS).
        address: None = a local Ray cluster on this machine (127.0.0.1 only); ``auto``
            or ``ray://HOST:PORT`` = join that cluster.
        workers: files analysed at once (None: what the CPUs allow, / ``cpus_per_worker``).
        cpus_per_worker, gpus_per_worker: Ray resources of each file's task (GPUs may be fractional).
        files_per_worker: files a worker process analyses before Ray replaces it with a
            fresh one (the model loads again: about 2 s), so its memory stays bounded.
        media: also write annotated mp4s. sample_fps: analyse only this many frames a second.
        retries: times a file whose worker died is tried again before it is ``crashed``.
        file_timeout: seconds a file may take once started before it is ``timeout`` (None: no limit).
        force: redo files already done, and accept other settings than the folder's.
        dry_run: only plan. faults: tests' fault injection, {part of a file name: ``ACTION@FRAME``}.
    """

    out: Path
    analyzer: AnalyzerSettings = field(default_factory=AnalyzerSettings)
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    files_per_worker: int = 50
    gpus_per_worker: float = 0.0
    media: bool = False
    sample_fps: float | None = None
    retries: int = 2
    file_timeout: float | None = None
    force: bool = False
    dry_run: bool = False
    encoder_threads: int = ENCODER_THREADS
    encoder_lookahead: int | None = ENCODER_LOOKAHEAD
    faults: dict[str, str] = field(default_factory=dict)
