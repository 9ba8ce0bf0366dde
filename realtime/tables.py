"""Per-face tables: one row per face per frame, the JSONL fields plus the source, as
Parquet (pyarrow: ``pandas.read_parquet`` reads it, or a folder of them, at once) or
CSV (the standard library: spreadsheets).

:class:`TableSink` writes ``realtime annotate --table`` and ``realtime archive``'s
``faces/KEY.parquet``; :func:`track_rows` turns a run's :class:`~realtime.analytics.Analytics`
summary into one row per track. Every table is written under a temporary name beside
it and renamed when complete (:func:`partial_path`), so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from array import array
from pathlib import Path

from engines.meta import ModelMeta
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.jsonl import face_records
from realtime.sinks import Sink, check_writable, partial_path
from realtime.sources import Frame

TABLE_SUFFIXES = frozenset({".parquet", ".csv"})

#: the per-face columns, in order (JSONL names; ``box`` and ``age_probs`` are lists;
#: ``person_id``: re-identification's person, empty while a track is not embedded yet or with --no-reid)
FACE_COLUMNS = ("source", "frame", "time", "file", "box", "score", "age_group", "age_probs", "gender",
                "gender_prob", "gender_unsure", "age", "track_id", "person_id", "predicted")
#: the per-track columns, in order
TRACK_COLUMNS = ("source", "track_id", "person_id", "first_frame", "last_frame", "first_time", "last_time", "dwell_seconds",
                 "frames", "detected_frames", "label_changes", "age_group", "gender", "gender_prob", "mean_age",
                 "age", "counted")

#: rows gathered before a Parquet row group or a CSV block is written
BATCH_ROWS = 4096

INSTALL_HINT = "pip install 'realtime[cluster]'"


def require_pyarrow(what: str):
    """pyarrow, or one line saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise RealtimeError(f"{what} needs pyarrow: {INSTALL_HINT}") from None
    return pyarrow


def write_atomic(path: str | Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary file and a rename."""
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def check_table(path: str | Path) -> Path:
    """Fail before any work if ``path`` is not a writable .parquet or .csv (or pyarrow is missing)."""
    path = check_writable(Path(path), TABLE_SUFFIXES, "--table")
    if path.suffix.lower() == ".parquet":
        require_pyarrow(f"--table {path}")
    return path


def face_schema():
    pa = require_pyarrow("a Parquet table")
    return pa.schema([
        ("source", pa.string()), ("frame", pa.int64()), ("time", pa.float64()), ("file", pa.string()),
        ("box", pa.list_(pa.int32())), ("score", pa.float64()), ("age_group", pa.string()),
        ("age_probs", pa.list_(pa.float64())), ("gender", pa.string()), ("gender_prob", pa.float64()),
        ("gender_unsure", pa.bool_()), ("age", pa.float64()), ("track_id", pa.int64()), ("person_id", pa.int64()), ("predicted", pa.bool_()),
    ])


def track_schema():
    pa = require_pyarrow("a Parquet table")
    types = {"source": pa.string(), "age_group": pa.string(), "gender": pa.string(), "counted": pa.bool_(),
             "first_time": pa.float64(), "last_time": pa.float64(), "dwell_seconds": pa.float64(),
             "gender_prob": pa.float64(), "mean_age": pa.float64(), "age": pa.float64()}
    return pa.schema([(c, types.get(c, pa.int64())) for c in TRACK_COLUMNS])


class _TableWriter:
    """Rows (dicts) in batches to a Parquet file or a CSV, at a temporary name; ``commit``
    renames it to ``path``, ``abandon`` removes it."""

    def __init__(self, path: Path, columns: tuple[str, ...], schema=None):
        self.path, self.columns, self.schema = path, columns, schema
        self.parquet = path.suffix.lower() == ".parquet"
        self.tmp = partial_path(path)
        self._file = None
        self._writer = None
        self.rows = 0
        try:
            if self.parquet:
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.tmp, schema)
            else:
                self._file = open(self.tmp, "w", newline="", encoding="utf-8")
                self._writer = csv.writer(self._file)
                self._writer.writerow(columns)
        except OSError as e:
            self.abandon()
            raise RealtimeError(f"cannot write {path}: {e.strerror}") from None

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        try:
            if self.parquet:
                import pyarrow as pa

                self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            else:
                self._writer.writerows([[_csv_value(r.get(c)) for c in self.columns] for r in rows])
        except OSError as e:
            self.abandon()
            raise RealtimeError(f"cannot write {self.path}: {e.strerror}") from None
        self.rows += len(rows)

    def _close(self) -> None:
        if self.parquet and self._writer is not None:
            self._writer.close()
        if self._file is not None:
            self._file.close()
        self._writer = self._file = None

    def keep_frames(self, last: int) -> None:
        """Rewrite the file with only the rows of frames up to index ``last`` (rare: a
        video that lost frames it had said it held)."""
        self._close()
        try:
            if self.parquet:
                import pyarrow.compute as pc
                import pyarrow.parquet as pq

                table = pq.read_table(self.tmp)
                pq.write_table(table.filter(pc.less_equal(table["frame"], last)), self.tmp)
                return
            with open(self.tmp, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            frame = self.columns.index("frame")
            with open(self.tmp, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows[:1] + [r for r in rows[1:] if int(r[frame]) <= last])
        except OSError as e:
            self.abandon()
            raise RealtimeError(f"cannot write {self.path}: {e.strerror}") from None

    def commit(self) -> None:
        try:
            self._close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abandon()
            raise RealtimeError(f"cannot write {self.path}: {e.strerror}") from None

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _csv_value(value):
    if isinstance(value, list):
        return json.dumps(value)
    return "" if value is None else value


def write_rows(path: str | Path, rows: list[dict], columns: tuple[str, ...], schema=None) -> None:
    """A whole table at once (complete or not at all)."""
    writer = _TableWriter(Path(path), columns, schema)
    writer.write(rows)
    writer.commit()


class TableSink(Sink):
    """One row per face per frame (:data:`FACE_COLUMNS`) to .parquet or .csv.

    ``source``: the ``source`` column's value. Rows go out in batches of
    :data:`BATCH_ROWS`; the table appears at ``path`` complete, on close, holding every
    frame the run processed. ``paced`` (set by :func:`realtime.sinks.follow`, beside a
    video): only the frames the video holds for good (:meth:`durable`) are kept, and
    :meth:`cut` keeps the first N, so however the run ends (a full disk, a signal) the
    table, the JSONL and the video hold the same frames. It also keeps each track's
    last gender probability and mean age for :func:`track_rows`."""

    def __init__(self, path: str | Path, meta: ModelMeta, source: str = ""):
        self.path = check_table(path)
        self.meta, self.source = meta, source
        self._out = _TableWriter(self.path, FACE_COLUMNS, face_schema() if self.path.suffix.lower() == ".parquet" else None)
        self.paced = False
        self._durable = 0  # frames the video holds for good (paced)
        self._cap: int | None = None  # cut: at most this many frames
        self._pending: list[list[dict]] = []  # rows of each frame not yet written
        self._pending_rows = 0
        self._indexes = array("q")  # each frame's index, in order (to cut back what was written)
        self._written = 0  # frames written to the file
        self.frames = 0
        self.track_probs: dict[int, float] = {}
        self.track_ages: dict[int, list[float]] = {}  # [sum, count]

    def write(self, frame: Frame, faces: Faces, annotated=None) -> None:
        if self._cap is not None:
            return
        base = {"source": self.source, "frame": frame.index, "time": round(frame.time, 4), "file": frame.name or None}
        rows = [{**base, **record} for record in face_records(faces, self.meta)]
        for row in rows:
            if row.get("track_id") is not None and row.get("gender_prob") is not None:
                self.track_probs[row["track_id"]] = row["gender_prob"]
                total = self.track_ages.setdefault(row["track_id"], [0.0, 0])
                total[0] += row["age"]
                total[1] += 1
        self._pending.append(rows)
        self._pending_rows += len(rows)
        self._indexes.append(frame.index)
        self.frames += 1
        self._drain(final=False)

    def durable(self, frames: int) -> None:
        """The video beside it holds its first ``frames`` frames for good."""
        self._durable = frames

    def cut(self, frames: int) -> None:
        """Keep only the first ``frames`` frames (the JSONL beside it holds no more)."""
        self._cap = frames if self._cap is None else min(self._cap, frames)

    def _kept(self) -> int:
        kept = min(self._durable, self.frames) if self.paced else self.frames
        return kept if self._cap is None else min(kept, self._cap)

    def _drain(self, final: bool) -> None:
        n = self._kept() - self._written
        if n <= 0 or (not final and self._pending_rows < BATCH_ROWS):
            return
        rows = [row for frame in self._pending[:n] for row in frame]
        if not final and len(rows) < BATCH_ROWS:
            return
        self._out.write(rows)
        del self._pending[:n]
        self._pending_rows -= len(rows)
        self._written += n

    def close(self) -> None:
        if self._out is None:
            return
        out = self._out
        try:
            self._drain(final=True)
            kept = self._kept()
            if kept < self._written:  # the video lost frames it had claimed (an .mkv's write error)
                out.keep_frames(self._indexes[kept - 1] if kept else -1)
            out.commit()
        finally:
            out.abandon()
            self._out = None

    def abandon(self) -> None:
        """Remove the temporary file and write nothing (a run that failed)."""
        if self._out is not None:
            self._out.abandon()
            self._out = None

    def mean_age(self, track_id: int) -> float | None:
        total = self.track_ages.get(track_id)
        return round(total[0] / total[1], 1) if total and total[1] else None


def track_rows(summary: dict, source: str, faces: TableSink | None = None) -> list[dict]:
    """One row per track (:data:`TRACK_COLUMNS`) from :meth:`Analytics.summary`; ``faces``
    adds each track's last gender probability and mean age."""
    rows = []
    for t in summary.get("tracks", []):
        row = {c: t.get(c) for c in TRACK_COLUMNS}
        row["source"] = source
        if faces is not None:
            row["gender_prob"] = faces.track_probs.get(t["track_id"])
            row["mean_age"] = faces.mean_age(t["track_id"])
        rows.append(row)
    return rows
