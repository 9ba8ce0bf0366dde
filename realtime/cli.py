"""The `realtime` command: a thin click shell over the library.

Each command parses its options, calls one library function and prints the result.
A user's mistake (RealtimeError or a bad option) prints one line on stderr and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading


def _interrupted_while_starting(signum, frame):
    # nothing is open yet: leave at once (an exception here could land in a finalizer
    # and be printed as "Exception ignored" instead of ending the process)
    os.write(2, b"interrupted\n")
    os._exit(130)


# Ctrl-C while the libraries load (seconds) ends quietly instead of with a traceback
# through importlib; _Cli.main hands SIGINT back to Python once the command runs.
if __name__ == "__main__" or sys.argv and sys.argv[0].endswith("realtime"):
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import click  # noqa: E402

from realtime import __version__  # noqa: E402
from realtime.errors import RealtimeError  # noqa: E402

log = logging.getLogger("realtime")


_signalled = False


def _ignore_signals() -> None:
    """SIGINT and SIGTERM ignored by the OS from here on (the command is ending)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _interrupt_once(signum, frame) -> None:
    """The `realtime` program's SIGINT and SIGTERM outside a run's own handlers: the
    first ends the command as Ctrl-C does (KeyboardInterrupt: "interrupted", exit 130);
    later ones are ignored (by the OS: Python resets its own handlers while it shuts
    down), so a storm of signals that outlasts a run (whose handlers finish the outputs
    first) cannot turn its exit into a kill."""
    global _signalled
    _ignore_signals()
    if not _signalled:
        _signalled = True
        raise KeyboardInterrupt


class _Cli(click.Group):
    """A group whose errors are one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            if threading.current_thread() is threading.main_thread():
                # Ctrl-C: KeyboardInterrupt from here on (once, for the program)
                signal.signal(signal.SIGINT, _interrupt_once if _program else signal.default_int_handler)
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except RealtimeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


class FiniteFloat(click.FloatRange):
    """A float option in a range that also refuses nan and inf (which every range
    comparison lets through)."""

    name = "number"

    def convert(self, value, param, ctx):
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for name in ("realtime", "engines", "train"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="realtime")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Age group and gender for every face in a camera feed, video, image or folder."""
    _setup_logging(verbose, quiet)


def analyzer_options(command):
    """Options shared by every command that runs the detector and the classifier."""
    from engines.backends import list_backends
    from realtime.detector_models import DETECTOR_MODELS
    from realtime.tracker import TrackerSettings

    options = [
        click.option("--model", type=click.Path(dir_okay=False), default=None,
                     help="Classifier: a .safetensors checkpoint or .onnx file (default: the shipped model)."),
        click.option("--backend", type=click.Choice(["auto", *list_backends()]), default="auto", show_default=True,
                     help="Inference backend; auto picks the fastest installed one."),
        click.option("--detector-model", type=click.Path(dir_okay=False), default=None,
                     help="MediaPipe face detector .tflite (default: found via $REALTIME_MODELS or the cache)."),
        click.option("--detector-range", type=click.Choice(list(DETECTOR_MODELS)), default="full", show_default=True,
                     help="full: crowds, faces up to ~5 m; short: close faces (webcam)."),
        click.option("--min-score", type=FiniteFloat(0, 1), default=0.5, show_default=True,
                     help="Detector confidence threshold."),
        click.option("--tiles", default="auto", show_default=True,
                     help="Also detect on overlapping tiles for small faces: auto (frames of 1280 px and more), off, or N columns."),
        click.option("--crop-scale", type=FiniteFloat(0.5, 4), default=None,
                     help="Face crop side / detector box side (default: the model's own)."),
        click.option("--flip/--no-flip", default=True, show_default=True,
                     help="Test-time flip: average each face with its mirror image (2x classifier work, more accurate)."),
        click.option("--track/--no-track", default=None,
                     help="Track faces across frames: ids, smoothed labels, people counts "
                          "(default: on for video, off for images and folders of photos; --track for an image sequence)."),
        click.option("--smoothing", type=FiniteFloat(0, 0.99), default=TrackerSettings.smoothing, show_default=True,
                     help="Label smoothing per track (forgetting factor; 0 = latest prediction only)."),
        click.option("--hysteresis", type=FiniteFloat(0, 1), default=TrackerSettings.hysteresis, show_default=True,
                     help="A track's shown label changes only when another leads by this probability margin."),
        click.option("--reclassify-every", type=click.IntRange(1), default=TrackerSettings.reclassify_every, show_default=True,
                     help="Classify a confident track only every K frames (1 = every frame)."),
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


summary_option = click.option(
    "--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
    help="Write people counts by age group and gender, dwell times and label flicker (JSON).")


def encoder_options(command):
    """libx264 settings for an annotated video (``-o out.mp4``): memory against speed.
    The defaults are ``realtime.sinks.ENCODER_*``, written out here so that ``--help``
    imports no video library (a test keeps them equal)."""
    options = [
        click.option("--encoder-threads", type=click.IntRange(0, 64), default=2, show_default=True,
                     help="libx264 threads for the video output, each encoding a slice of every frame; "
                          "0: x264's own frame threads (1.5 per core), ~65 MB more at 1080p."),
        click.option("--encoder-lookahead", type=click.IntRange(0, 250), default=5, show_default=True,
                     help="Frames libx264 looks ahead for rate control, ~7 MB each at 1080p "
                          "(x264's veryfast: 10; 0: no macroblock tree, files ~15% larger)."),
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


def integration_options(command):
    """--mqtt, --webhook (realtime.integrations) and --blur, for annotate, run and serve."""
    options = [
        click.option("--mqtt", envvar="REALTIME_MQTT", default=None, metavar="URL",
                     help="Publish track events and counts: mqtt://[user:pass@]HOST[:PORT][/PREFIX] "
                          "(mqtts:// for TLS; env REALTIME_MQTT keeps a password out of ps)."),
        click.option("--mqtt-interval", type=FiniteFloat(0), default=10.0, show_default=True,
                     help="Seconds between PREFIX/SOURCE/counts messages (0: none)."),
        click.option("--mqtt-ca", type=click.Path(dir_okay=False), default=None,
                     help="CA certificates for mqtts:// (default: the system's)."),
        click.option("--webhook", default=None, metavar="URL", help="POST track events as signed JSON batches to this URL."),
        click.option("--webhook-secret", envvar="REALTIME_WEBHOOK_SECRET", default=None,
                     help="HMAC-SHA256 key of the X-Realtime-Signature header (env REALTIME_WEBHOOK_SECRET)."),
        click.option("--blur", is_flag=True, default=False,
                     help="Blur every face in the video, window, stream and snapshots (JSONL and counts unchanged)."),
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


def _integrations(kw: dict):
    """The connected Integrations of the options (popped from ``kw``)."""
    from realtime.integrations import IntegrationSettings, Integrations

    return Integrations(IntegrationSettings(
        mqtt=kw.pop("mqtt"), mqtt_interval=kw.pop("mqtt_interval"), mqtt_ca=kw.pop("mqtt_ca"),
        webhook=kw.pop("webhook"), webhook_secret=kw.pop("webhook_secret")))


def _outputs(kw: dict, **where):
    """OutputSettings of ``where`` (media, json, summary, show), the encoder options and
    --blur (popped from ``kw``)."""
    from realtime.pipeline import OutputSettings

    return OutputSettings(**where, encoder_threads=kw.pop("encoder_threads"), encoder_lookahead=kw.pop("encoder_lookahead"),
                          blur=kw.pop("blur"))


def _settings(kw: dict):
    """AnalyzerSettings from the shared options (popped from ``kw``)."""
    from realtime.pipeline import AnalyzerSettings
    from realtime.tracker import TrackerSettings

    return AnalyzerSettings(
        model=kw.pop("model"), backend=kw.pop("backend"), detector_model=kw.pop("detector_model"),
        detector_range=kw.pop("detector_range"), min_score=kw.pop("min_score"), tiles=kw.pop("tiles"),
        crop_scale=kw.pop("crop_scale"), flip=kw.pop("flip"),
        track=kw.pop("track"),
        tracker=TrackerSettings(smoothing=kw.pop("smoothing"), hysteresis=kw.pop("hysteresis"),
                                reclassify_every=kw.pop("reclassify_every")),
    )


@contextlib.contextmanager
def _progress(desc: str):
    """A tqdm bar driven by the pipeline's callbacks."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr, disable=None)
    faces = 0

    def on_start(source):
        bar.total = source.frame_count
        bar.set_description(source.name)
        bar.refresh()

    def on_frame(frame, found):
        nonlocal faces
        faces += len(found)
        bar.set_postfix(faces=faces, refresh=False)
        bar.update()

    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger(n) for n in ("realtime", "engines")]):
            yield on_start, on_frame
    finally:
        bar.close()


def _finish(stats, json_to_stdout: bool) -> None:
    """Print the run's summary; an interrupted run exits 130 (its outputs are complete)."""
    click.echo(stats.summary(), err=json_to_stdout)
    if _program:
        _ignore_signals()  # the work is done: a late (or another) signal changes nothing
    if stats.interrupted:
        sys.exit(130)


@cli.command()
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Annotated output: .mp4 for a video, an image file for an image, a folder for a folder.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Per-frame results as JSON Lines ('-' for stdout).")
@summary_option
@encoder_options
@integration_options
@analyzer_options
def annotate(input: str, output: str, json_path: str | None, summary_path: str | None, **kw) -> None:
    """Annotate a video file, an image or a folder of images."""
    from realtime.pipeline import annotate as annotate_

    settings = _settings(kw)
    outputs = _outputs(kw, media=output, json=json_path, summary=summary_path)
    with _integrations(kw) as integrations, _progress("annotate") as (on_start, on_frame):
        stats = annotate_(input, outputs, settings, on_start, on_frame, sinks=integrations.sinks)
    _finish(stats, json_path == "-")


def live_options(command):
    """Options shared by the live commands (`run`, `serve`): sources and outputs."""
    options = [
        click.option("--source", "sources", multiple=True, default=["0"], show_default=True,
                     help="Camera index, video file, image, folder, or rtsp:// / http:// URL; repeat for several sources."),
        click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Record the annotated video (.mp4)."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                     help="Per-frame results as JSON Lines ('-' for stdout)."),
        click.option("--reconnect-timeout", type=FiniteFloat(0), default=300.0, show_default=True,
                     help="Seconds to keep reconnecting a camera or stream that dropped (0: never)."),
        summary_option,
        encoder_options,
        integration_options,
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


@cli.command()
@live_options
@click.option("--show/--no-show", default=None, help="Open a window (default: when a display exists).")
@analyzer_options
def run(sources: tuple[str, ...], output: str | None, json_path: str | None, show: bool | None, reconnect_timeout: float,
        summary_path: str | None, **kw) -> None:
    """Live: detect and label faces on a camera, stream or file, with an FPS counter."""
    from realtime.pipeline import run as run_

    settings = _settings(kw)
    outputs = _outputs(kw, media=output, json=json_path, summary=summary_path, show=show)
    with _integrations(kw) as integrations, _progress("run") as (on_start, on_frame):
        stats = run_(list(sources), outputs, settings, on_start, on_frame, reconnect_timeout, sinks=integrations.sinks)
    _finish(stats, json_path == "-")


@cli.command()
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
          host: str, port: int, token: str | None, loop: bool, pace: bool, stall_timeout: float, stream_fps: float,
          jpeg_quality: int, video: bool, **kw) -> None:
    """Live analysis with a web page and an HTTP API (for machines with no display)."""
    from realtime.serve import ServeSettings, serve as serve_

    settings = ServeSettings(host, port, token, loop, pace, stall_timeout, stream_fps, jpeg_quality, video)

    def ready(url: str) -> None:
        click.echo(f"serving on {url}", err=json_path == "-")
        if host in ("0.0.0.0", "::"):
            click.echo("(listening on every address: open it with this machine's name or address)", err=json_path == "-")

    outputs = _outputs(kw, media=output, json=json_path, summary=summary_path)
    analyzer = _settings(kw)
    with _integrations(kw) as integrations:
        stats = serve_(list(sources), settings, analyzer, outputs, reconnect_timeout, ready, integrations)
    _finish(stats, json_path == "-")


@cli.command()
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
    import json
    from pathlib import Path

    from realtime.bench import BenchSettings, bench as bench_
    from realtime.sinks import check_writable

    try:
        sizes = tuple(int(b) for b in batches.split(","))
    except ValueError:
        raise click.BadParameter(f"{batches!r}: expected integers like 1,8,32", param_hint="--batches") from None
    if json_path:
        check_writable(Path(json_path), None, "JSON output")
    settings = BenchSettings(input, _settings(kw), max_frames, sizes, list(backends) or None, classifier_seconds)
    with _progress("bench") as (_, on_frame):
        report = bench_(settings, on_frame)
    click.echo(report.table())
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2))


@cli.group()
def models() -> None:
    """The MediaPipe face detector models: where they are, and fetching them."""


@models.command("list")
def models_list() -> None:
    """Show which detector models are found, and where."""
    from realtime.detector_models import list_detector_models, search_dirs

    for model, path, origin in list_detector_models():
        state = f"{path} ({origin})" if path else "missing: run `realtime models fetch`"
        click.echo(f"{model.range:6} {model.filename:42} {state}")
    click.echo("searched: " + ", ".join(f"{d} ({o})" for o, d in search_dirs()))


@models.command("fetch")
@click.option("--from", "source", type=click.Path(exists=True), default=None,
              help="A folder holding the .tflite files, or a downloaded mediapipe wheel (default: download the wheel with pip).")
@click.option("--force", is_flag=True, help="Fetch again even if the cache already holds verified files.")
def models_fetch(source: str | None, force: bool) -> None:
    """Put the detector models into the user cache, checking their sha256."""
    from realtime.detector_models import fetch_detector_models

    for path in fetch_detector_models(source, force):
        click.echo(f"ok {path}")


def _add_library_commands() -> None:
    """Commands that live beside their library code (train/, engines/)."""
    from engines.commands import convert_command, ensemble_command
    from train.commands import eval_command, sheet_command, train_command

    for command in (train_command, eval_command, convert_command, ensemble_command):
        cli.add_command(command)
    cli.add_command(analyzer_options(sheet_command))


_add_library_commands()


#: True when running as the `realtime` program (not called from Python or a test)
_program = False


def main() -> None:
    global _program
    _program = True
    signal.signal(signal.SIGTERM, _interrupt_once)
    if hasattr(signal, "SIGXFSZ"):  # over a file size limit: a write error (one line), not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    cli(prog_name="realtime")


if __name__ == "__main__":
    main()
