"""The entry functions: :func:`annotate` (files) and :func:`run` (live) differ only in
their sinks; both go through :func:`realtime.loop.process`, the one loop.

The data path: source -> detector -> crops -> engine -> overlay/sinks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from pathlib import Path
from typing import Callable

from realtime.analytics import Analytics
from realtime.analyzer import Analyzer, AnalyzerSettings
from realtime.annotators import default_annotators
from realtime.errors import RealtimeError
from realtime.loop import FrameCallback, RunStats, process
from realtime.signals import finishing_signals
from realtime.sinks import WindowSink, has_display
from realtime.sources import Source
from realtime.timing import StageTimer
from realtime.wiring import OutputSettings, SinkFactory, check_outputs, claim, data_sinks, numbered, opened

log = logging.getLogger(__name__)


def _run(sources: list[Source], settings: AnalyzerSettings, sinks: list[SinkFactory],
         summary_path: str | Path | None, fps_overlay: bool,
         on_start: Callable[[Source], None] | None, on_frame: FrameCallback | None,
         timer: StageTimer | None = None, analyzer: Analyzer | None = None,
         blur: bool = False) -> RunStats:
    """``analyzer``: one already loaded (its tracks and people start again), kept open; else
    one is loaded from ``settings`` and closed at the end."""
    stop, signalled = threading.Event(), threading.Event()
    with finishing_signals(stop, signalled) as running, contextlib.ExitStack() as stack:
        for source in sources:
            stack.enter_context(source)
        if settings.track is None and any(s.kind in ("image", "folder") for s in sources):
            settings = dataclasses.replace(settings, track=False)
            if any(s.kind == "folder" for s in sources):
                log.info("a folder of photos: no tracking, smoothing or people counts across files (--track for an image sequence)")
        if analyzer is None:
            analyzer = Analyzer(settings)
            stack.callback(analyzer.close)
        else:
            analyzer.restart()  # a new run: track ids and people start again
        if summary_path is not None and not analyzer.tracking:
            why = "--no-track" if settings.track is False and not any(s.kind in ("image", "folder") for s in sources) else \
                "images and folders of photos are not tracked (--track: an image sequence)"
            log.warning("--summary %s: not written: people counts need tracking, and %s", summary_path, why)
        # one Analytics per source (when tracking), the sinks' and the summary's
        analytics = [Analytics(analyzer.meta, frame_seconds=1.0 / source.fps if source.fps else 0.0,
                               path=numbered(summary_path, k, len(sources)))
                     for k, source in enumerate(sources)] if analyzer.tracking else []
        opened = [[stack.enter_context(make(source, analyzer, k, analytics[k] if analytics else None)) for make in sinks]
                  for k, source in enumerate(sources)]
        for k, counts in enumerate(analytics):
            opened[k].append(stack.enter_context(counts))
        if on_start is not None:
            for source in sources:
                on_start(source)
        annotators = [default_annotators(analyzer.meta, fps=fps_overlay, blur=blur) for _ in sources]
        running()
        stats = process(sources, analyzer.analyze, annotators, opened, on_frame, [s.live for s in sources], stop=stop, timer=timer)
    stats.signalled = signalled.is_set()
    stats.source = ", ".join(s.name for s in sources)
    stats.gave_up = [f"{s.name}: {s.gave_up}" for s in sources if getattr(s, "gave_up", None)]
    sinks = [s for group in opened for chain in group for s in getattr(chain, "sinks", [chain])]
    stats.outputs = sorted({str(s.path) for s in sinks if getattr(s, "path", None) is not None})
    stats.people = "; ".join((f"source {k}: " if len(sources) > 1 else "") + a.line() for k, a in enumerate(analytics))
    return stats


def annotate(
    input: str | Path,
    output: OutputSettings | str | Path,
    settings: AnalyzerSettings | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_frame: FrameCallback | None = None,
    sinks: list[SinkFactory] = (),
    analyzer: Analyzer | None = None,
    wrap: Callable[[Source], Source] | None = None,
) -> RunStats:
    """Annotate a video (-> mp4), an image (-> image) or a folder (-> folder of images),
    optionally writing per-frame JSON Lines, a per-face table and a people summary
    (JSON). ``output`` is an :class:`OutputSettings`, or just the annotated output's
    path. For callers that annotate many files (``realtime archive``): ``sinks`` are
    more sink factories, ``analyzer`` one already loaded (kept open), ``wrap(source)``
    may replace the opened source (e.g. to sample it); ``sinks`` may also be
    :attr:`realtime.integrations.Integrations.sinks`."""
    out = output if isinstance(output, OutputSettings) else OutputSettings(media=output)

    def check(source: Source) -> None:
        if source.live:
            raise RealtimeError(f"{source.name}: annotate takes a file or folder; use `realtime run --source` for cameras and streams")
        check_outputs(source, out.media, out.json, out.summary)
        if out.table is not None:
            from realtime.tables import check_table

            check_table(out.table)

    settings = settings or AnalyzerSettings()
    source = opened(input, 0, check, settings.max_pixels)
    source = wrap(source) if wrap is not None else source
    with claim([source], out.media, out.json, out.summary, out.table):
        return _run([source], settings, data_sinks(out) + list(sinks), out.summary, False,
                    on_start, on_frame, analyzer=analyzer, blur=out.blur)


def run(
    source_spec: str | list[str],
    output: OutputSettings | None = None,
    settings: AnalyzerSettings | None = None,
    on_start: Callable[[Source], None] | None = None,
    on_frame: FrameCallback | None = None,
    reconnect: float | None = 300.0,
    sinks: list[SinkFactory] = (),
    wrap: Callable[[str, Source], Source] | None = None,
    timer: StageTimer | None = None,
) -> RunStats:
    """Live: one or several cameras, streams or files, each shown in its own window when
    a display exists (``output.show`` None = if possible), optionally recorded to mp4,
    JSON Lines and a people summary (:class:`OutputSettings`), FPS on the overlay. With
    several sources the faces of all of them go to the classifier in one batch, and
    output paths need ``{source}`` (replaced by the source's number; JSON to ``-`` gains
    a ``source`` field). A camera or stream that drops is reopened for up to
    ``reconnect`` seconds a gap.

    For callers that add to a run (``realtime serve``): ``sinks`` are more sink
    factories per source (given the run's Analytics of the source, None without tracking), ``wrap(spec, source)`` may replace each opened source (e.g.
    to loop a file), ``timer`` receives the stage times as the loop runs."""
    out = output or OutputSettings()
    output, json_path, summary_path, show = out.media, out.json, out.summary, out.show
    specs = [source_spec] if isinstance(source_spec, (str, Path)) else list(source_spec)
    if not specs:
        raise RealtimeError("no --source given")
    n = len(specs)
    for path, what in ((output, "--output"), (json_path, "--json"), (summary_path, "--summary")):
        if n > 1 and path is not None and str(path) != "-" and "{source}" not in str(path):
            raise RealtimeError(f"{what} {path}: with several sources put {{source}} in the name (e.g. out_{{source}}.mp4)")
    if show is None:
        show = has_display()
        if not show:
            log.warning("no display found: running headless (no window)")
    elif show and not has_display():
        raise RealtimeError("--show: there is no display to open a window on (DISPLAY is not set)")

    settings = settings or AnalyzerSettings()
    sources: list[Source] = []
    try:
        for k, spec in enumerate(specs):

            def check(source: Source, k: int = k) -> None:
                if source.kind in ("image", "folder") and output is not None:
                    raise RealtimeError(f"{source.name}: --output records video; use `realtime annotate` for images and folders")
                check_outputs(source, numbered(output, k, n), numbered(json_path, k, n), numbered(summary_path, k, n))

            source = opened(spec, reconnect, check, settings.max_pixels)
            sources.append(wrap(str(spec), source) if wrap is not None else source)
    except RealtimeError:
        for source in sources:
            source.close()
        raise
    window = [lambda src, an, k, analytics: WindowSink(f"realtime {k} - {src.name}")] if show else []
    with claim(sources, output, json_path, summary_path):
        return _run(sources, settings, window + data_sinks(out, n) + list(sinks), summary_path,
                    True, on_start, on_frame, timer, blur=out.blur)
