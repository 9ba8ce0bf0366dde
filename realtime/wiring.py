"""Outputs of a run: where they go (:class:`OutputSettings`), checking them before any
work, claiming them, and the sinks that write them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2

from engines.images import DEFAULT_MAX_PIXELS
from engines.writes import check_distinct
from realtime.analytics import Analytics
from realtime.analyzer import Analyzer
from realtime.errors import RealtimeError
from realtime.jsonl import JsonlSink
from realtime.outputs import OutputLock, claim_outputs
from realtime.sinks import ENCODER_LOOKAHEAD, ENCODER_THREADS, VIDEO_SUFFIXES, ImageSink, Sink, VideoSink, check_writable, follow
from realtime.sources import IMAGE_SUFFIXES, Source, open_source

#: (source, analyzer, source number, the run's Analytics of that source or None) -> Sink
SinkFactory = Callable[[Source, Analyzer, int, Analytics | None], Sink]


@dataclass
class OutputSettings:
    """Where :func:`annotate` and :func:`run` write; None = not written.

    Attributes:
        media: annotated output: .mp4 for a video or live source, an image file for an
            image, a folder for a folder of images. With several sources put
            ``{source}`` in every path (it becomes the source's number).
        json: per-frame results as JSON Lines (``"-"``: stdout).
        summary: people counts by age group and gender, dwell times, flicker (JSON).
        table: one row per face per frame, the JSONL fields (.parquet or .csv; see
            :mod:`realtime.tables`).
        show: open a window per source (``run`` only; None = when a display exists).
        encoder_threads: libx264 threads for ``media`` video, each encoding a slice of
            every frame; 0 = x264's own frame threads (1.5 per core: ~65 MB more at 1080p).
        encoder_lookahead: frames libx264 looks ahead for rate control; None = the
            preset's (10; what each costs: README, Memory).
        blur: blur every face in everything drawn (the media, the window, what a sink
            shows); the JSONL and the counts are unchanged.
    """

    media: str | Path | None = None
    json: str | Path | None = None
    summary: str | Path | None = None
    table: str | Path | None = None
    show: bool | None = None
    encoder_threads: int = ENCODER_THREADS
    encoder_lookahead: int | None = ENCODER_LOOKAHEAD
    blur: bool = False


def numbered(path: str | Path | None, k: int, n: int) -> str | Path | None:
    """With several sources, ``{source}`` in an output path becomes the source's number."""
    if path is None or n == 1 or str(path) == "-":
        return path
    return str(path).replace("{source}", str(k))



def check_outputs(source: Source, output: str | Path | None, *data_paths: str | Path | None) -> None:
    """Fail before any work if an output cannot be written or does not fit the source.
    ``data_paths`` are JSON files (None: not asked for; "-": stdout)."""
    if output is not None:
        if source.kind == "folder":
            out = Path(output)
            if out.exists() and not out.is_dir():
                raise RealtimeError(f"output {out}: a folder of images goes to a folder, not a file")
            check_writable(out / "x.jpg" if out.is_dir() else out, None, "output folder")
        elif source.kind == "image":
            check_writable(Path(output), IMAGE_SUFFIXES, "image output")
            if not cv2.haveImageWriter(str(Path(output).with_name("x" + Path(output).suffix))):
                raise RealtimeError(f"image output {output}: this OpenCV cannot write {Path(output).suffix} images; use .jpg or .png")
        else:
            check_writable(Path(output), VIDEO_SUFFIXES, "video output")
    for path in data_paths:
        if path is not None and str(path) != "-":
            check_writable(Path(path), None, "JSON output")


def data_sinks(out: OutputSettings, n: int = 1) -> list[SinkFactory]:
    """The annotated output, the JSONL and the per-face table (``out.table``) of each of
    ``n`` sources, in one factory: beside a video the JSONL and the table follow it
    (:func:`realtime.sinks.follow`)."""

    def media(source: Source, k: int) -> Sink:
        path = numbered(out.media, k, n)
        if source.kind in ("image", "folder"):
            return ImageSink(path, folder=source.kind == "folder")
        return VideoSink(path, source.fps, threads=out.encoder_threads, lookahead=out.encoder_lookahead)

    def data(source: Source, analyzer: Analyzer, k: int, analytics=None) -> Sink:
        made = media(source, k) if out.media is not None else None
        lines = table = None
        try:
            if out.json is not None:
                lines = JsonlSink(numbered(out.json, k, n), analyzer.meta, source=k if n > 1 else None)
            if out.table is not None:
                from realtime.tables import TableSink

                table = TableSink(numbered(out.table, k, n), analyzer.meta, source=source.name)
        except BaseException:
            for opened in (made, lines):
                if opened is not None:
                    opened.close()
            raise
        # beside a video the lines and the table follow its durable frames: all hold the same frames
        chain = follow(made if isinstance(made, VideoSink) else None, lines, table)
        if made is not None and not isinstance(made, VideoSink):  # images: nothing to follow
            chain.sinks.insert(0, made)
        return chain

    return [data] if out.media is not None or out.json is not None or out.table is not None else []


def claim(sources: list[Source], output, json_path, summary_path, table_path=None) -> OutputLock:
    """Check that no output is an input or another output, and lock them all (closing
    the sources if not)."""
    n = len(sources)
    outputs, files = [], []
    for k, source in enumerate(sources):
        for what, path in (("output folder" if source.kind == "folder" else "output", output),
                           ("--json", json_path), ("--summary", summary_path), ("--table", table_path)):
            path = numbered(path, k, n)
            if path is not None and str(path) != "-":
                outputs.append((what, Path(path)))
        if source.kind == "folder" and output is not None:  # each image it will write, too
            files += [("output", Path(numbered(output, k, n)) / p.name) for p in source.paths[1:]]
    inputs = [p for source in sources for p in source.paths]
    # the summary is written whole at the end (renamed into place), so it needs no lock,
    # and no empty file made to hold one (which SIGKILL would leave behind)
    locked = [(what, path) for what, path in outputs if what != "--summary"]
    try:
        check_distinct(inputs, outputs + files)
        return claim_outputs(inputs, locked)
    except RealtimeError:
        for source in sources:
            source.close()
        raise


def opened(spec: str | Path, reconnect: float | None, check: Callable[[Source], None], max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    source = open_source(spec, reconnect, max_pixels)
    try:
        check(source)
    except RealtimeError:
        source.close()
        raise
    return source
