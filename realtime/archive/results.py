"""The results folder of ``realtime archive`` (``--out DIR``)::

    DIR/run.json              app version, model and detector sha256, the analysis settings
    DIR/manifest.parquet      one row per input (MANIFEST_COLUMNS)
    DIR/faces/KEY.parquet     one row per face per frame (realtime.tables.FACE_COLUMNS)
    DIR/tracks/KEY.parquet    one row per track (realtime.tables.TRACK_COLUMNS)
    DIR/summary/KEY.json      the --summary content
    DIR/media/KEY.mp4         the annotated video (--media)

Every file appears under its name complete (written as a hidden ``.NAME.TOKEN.partial.SUFFIX``
and renamed); partial files of a run that was killed are removed by the next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engines.writes import write_atomic
from realtime import __version__
from realtime.errors import RealtimeError
from realtime.tables import require_pyarrow

try:  # POSIX: one driver per DIR at a time
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: the manifest's columns and their Arrow types (names of pyarrow type factories)
MANIFEST_COLUMNS = {
    "key": "string", "source": "string", "status": "string", "frames": "int64", "frames_expected": "int64",
    "faces": "int64", "people": "int64", "attempts": "int64", "node": "string", "seconds": "float64",
    "error": "string", "size": "int64", "mtime_ns": "int64", "peak_rss_mb": "float64",
    "pid": "int64",
}
STATUSES = ("ok", "failed", "crashed", "timeout")
FOLDERS = ("faces", "tracks", "summary", "media")


@dataclass(frozen=True)
class Layout:
    """Where each result of ``root`` lives."""

    root: Path

    def result(self, folder: str, key: str) -> Path:
        suffix = {"faces": ".parquet", "tracks": ".parquet", "summary": ".json", "media": ".mp4"}[folder]
        return self.root / folder / f"{key}{suffix}"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    def create(self, media: bool) -> None:
        try:
            for folder in FOLDERS if media else FOLDERS[:3]:
                (self.root / folder).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RealtimeError(f"--out {self.root}: cannot be written ({e.strerror})") from None

    def complete(self, key: str, media: bool) -> bool:
        return all(self.result(f, key).is_file() for f in (FOLDERS if media else FOLDERS[:3]))

    def partials(self, key: str | None = None) -> list[Path]:
        """Temporary files left by a run that was stopped (of ``key``, or all)."""
        pattern = f".{key}.*.partial.*" if key else ".*.partial.*"
        found = [p for folder in FOLDERS for p in (self.root / folder).glob(pattern)]
        return found + list(self.root.glob(".*.partial.*")) if key is None else found

    def remove_partials(self, key: str | None = None) -> None:
        for path in self.partials(key):
            with contextlib.suppress(OSError):
                path.unlink()


def read_run(layout: Layout) -> dict | None:
    try:
        return json.loads(layout.run_json.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RealtimeError(f"{layout.run_json}: not readable ({e}); use another --out, or --force to start it again") from None


def settings_differ(old: dict, new: dict) -> list[str]:
    """What differs between two run records' model, detector and settings (one phrase each)."""
    changes = []
    for part in ("model", "detector"):
        if old.get(part, {}).get("sha256") != new[part]["sha256"]:
            changes.append(f"{part} {new[part]['path']}")
    old_settings, new_settings = old.get("settings", {}), new["settings"]
    for name in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(name) != new_settings.get(name):
            changes.append(f"{name} {old_settings.get(name)} -> {new_settings.get(name)}")
    return changes


def run_record(model: dict, detector: dict, settings: dict) -> dict:
    return {"app": "realtime", "version": __version__, "model": model, "detector": detector, "settings": settings}


def write_run(layout: Layout, record: dict) -> None:
    write_atomic(layout.run_json, json.dumps(record, indent=2) + "\n", "archive run record")


def _schema():
    pa = require_pyarrow("realtime archive")
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in MANIFEST_COLUMNS.items()])


def read_manifest(layout: Layout) -> dict[str, dict]:
    """The manifest's rows by key (none yet: empty)."""
    if not layout.manifest.is_file():
        return {}
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(layout.manifest).to_pylist()
    except Exception as e:  # pyarrow raises its own types for a damaged file
        raise RealtimeError(f"{layout.manifest}: not readable ({str(e).splitlines()[0]}); use --force to start again") from None
    return {row["key"]: row for row in rows}


def write_manifest(layout: Layout, rows: dict[str, dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{c: r.get(c) for c in MANIFEST_COLUMNS} for r in rows.values()], schema=_schema())
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(layout.manifest, sink.getvalue().to_pybytes(), "archive manifest")


@dataclass
class FileResult:
    """What a worker reports for one file (a manifest row without the driver's fields)."""

    status: str
    frames: int = 0
    frames_expected: int | None = None
    faces: int = 0
    people: int | None = None
    node: str = ""
    seconds: float = 0.0
    error: str | None = None
    peak_rss_mb: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def locked(layout: Layout):
    """Hold ``DIR/.lock`` for a run: a second driver on the same DIR stops with one line."""
    if fcntl is None:
        yield
        return
    path = layout.root / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RealtimeError(f"--out {layout.root}: another realtime archive is writing it; wait for it to end") from None
        yield
    finally:
        os.close(fd)
