"""`realtime annotate`, `run`, `serve` and `bench`: the analysis commands."""

from __future__ import annotations

import click

from realtime.cli.options import (
    FiniteFloat,
    analyzer_options,
    analyzer_settings,
    encoder_options,
    finish,
    integration_options,
    integrations,
    live_options,
    output_settings,
    progress,
    summary_option,
)


@click.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Annotated output: .mp4 for a video, an image file for an image, a folder for a folder.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Per-frame results as JSON Lines ('-' for stdout).")
@summary_option
@click.option("--table", "table_path", type=click.Path(dir_okay=False), default=None,
              help="One row per face per frame, the JSON fields: .parquet (needs pyarrow) or .csv.")
@encoder_options
@integration_options
@analyzer_options
def annotate(input: str, output: str, json_path: str | None, summary_path: str | None, table_path: str | None, **kw) -> None:
    """Annotate a video file, an image or a folder of images."""
    from realtime.pipeline import annotate as annotate_

    settings = analyzer_settings(kw)
    outputs = output_settings(kw, media=output, json=json_path, summary=summary_path, table=table_path)
    with integrations(kw) as connected, progress("annotate") as (on_start, on_frame):
        stats = annotate_(input, outputs, settings, on_start, on_frame, sinks=connected.sinks)
    finish(stats, json_path == "-")


@click.command()
@live_options
@click.option("--show/--no-show", default=None, help="Open a window (default: when a display exists).")
@analyzer_options
def run(sources: tuple[str, ...], output: str | None, json_path: str | None, show: bool | None, reconnect_timeout: float,
        summary_path: str | None, source_file: str | None, **kw) -> None:
    """Live: detect and label faces on a camera, stream or file, with an FPS counter."""
    from realtime.pipeline import run as run_
    from realtime.sources import source_specs

    sources = source_specs(sources, source_file)

    settings = analyzer_settings(kw)
    outputs = output_settings(kw, media=output, json=json_path, summary=summary_path, show=show)
    with integrations(kw) as connected, progress("run") as (on_start, on_frame):
        stats = run_(list(sources), outputs, settings, on_start, on_frame, reconnect_timeout, sinks=connected.sinks)
    finish(stats, json_path == "-")


@click.command()
@live_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback requires a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port (0: any free one).")
@click.option("--token", envvar="REALTIME_TOKEN", default=None,
              help="Secret every request must carry (env REALTIME_TOKEN); default: none on loopback, a random one printed at start otherwise.")
@click.option("--loop/--no-loop", "loop", default=False, show_default=True, help="Play video files again from the start when they end.")
@click.option("--pace/--no-pace", default=True, show_default=True,
              help="Play video files at their frame rate, like a camera (--no-pace: every frame, as fast as analysis goes).")
@click.option("--stall-timeout", type=FiniteFloat(0.5), default=10.0, show_default=True,
              help="Drop a viewer that takes no data for this many seconds.")
@click.option("--stream-fps", type=FiniteFloat(0.5, 240), default=30.0, show_default=True,
              help="Most frames a second sent to each video viewer.")
@click.option("--jpeg-quality", type=click.IntRange(10, 100), default=80, show_default=True, help="Quality of the video stream.")
@click.option("--video/--no-video", default=True, show_default=True,
              help="Serve the annotated video (stream, snapshots); --no-video: counts and the API only.")
@analyzer_options
def serve(sources: tuple[str, ...], output: str | None, json_path: str | None, reconnect_timeout: float, summary_path: str | None,
          source_file: str | None, host: str, port: int, token: str | None, loop: bool, pace: bool, stall_timeout: float,
          stream_fps: float, jpeg_quality: int, video: bool, **kw) -> None:
    """Live analysis with a web page and an HTTP API (for machines with no display)."""
    from realtime import signals
    from realtime.serve import ServeSettings, serve as serve_
    from realtime.sources import source_specs

    sources = source_specs(sources, source_file)

    settings = ServeSettings(host, port, token, loop, pace, stall_timeout, stream_fps, jpeg_quality, video)

    def ready(url: str) -> None:
        signals.run_started()
        click.echo(f"serving on {url}", err=json_path == "-")
        if host in ("0.0.0.0", "::"):
            click.echo("(listening on every address: open it with this machine's name or address)", err=json_path == "-")

    outputs = output_settings(kw, media=output, json=json_path, summary=summary_path)
    analysis = analyzer_settings(kw)
    with integrations(kw) as connected:
        stats = serve_(list(sources), settings, analysis, outputs, reconnect_timeout, ready, connected)
    finish(stats, json_path == "-")


@click.command()
@click.argument("input", type=click.Path())
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the report as JSON.")
@click.option("--frames", "max_frames", type=click.IntRange(1), default=None, help="Only the first N frames.")
@click.option("--batches", default="1,8,32", show_default=True, help="Classifier batch sizes, comma separated.")
@click.option("--classifier-seconds", type=FiniteFloat(0.1), default=2.0, show_default=True,
              help="Time per backend and batch size.")
@click.option("--classifier-backend", "backends", multiple=True, help="Only these backends (default: every installed one).")
@analyzer_options
def bench(input, json_path, max_frames, batches, classifier_seconds, backends, **kw) -> None:
    """Per-stage timings, end-to-end fps vs the passthrough floor, classifier crops/s."""
    from engines.limits import LIMITS
    from engines.writes import check_outputs, json_text, write_atomic
    from realtime.bench import BenchSettings, bench as bench_

    try:
        sizes = tuple(int(b) for b in batches.split(","))
    except ValueError:
        raise click.BadParameter(f"{batches!r}: expected integers like 1,8,32", param_hint="--batches") from None
    if problem := next((f"{b}: {p}" for b in sizes if (p := LIMITS["batch"].problem(b))), None):
        raise click.BadParameter(problem, param_hint="--batches")
    check_outputs([input], [("--json", json_path)])
    settings = BenchSettings(input, analyzer_settings(kw), max_frames, sizes, list(backends) or None, classifier_seconds)
    with progress("bench") as (_, on_frame):
        report = bench_(settings, on_frame)
    click.echo(report.table())
    if json_path:
        write_atomic(json_path, json_text(report.to_dict(), indent=2), "--json")


