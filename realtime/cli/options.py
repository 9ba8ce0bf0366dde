"""Options and helpers the commands share: the analyzer's, the encoder's and the live
sources' options, the settings built from them, a progress bar and the run's ending."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys

import click

from realtime import signals


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



class Limited(click.ParamType):
    """A number checked against the one table of limits (``engines.limits.LIMITS[key]``),
    as a usage error before any work: ``--crop-scale 10: expected 0.5 to 4``."""

    def __init__(self, key: str, integer: bool = False):
        self.key, self.integer = key, integer
        self.name = "integer" if integer else "number"

    def convert(self, value, param, ctx):
        from engines.limits import LIMITS

        number = value
        if isinstance(value, str):
            try:
                number = int(value) if self.integer else float(value)
            except ValueError:
                self.fail(f"{value!r} is not {'an integer' if self.integer else 'a number'}", param, ctx)
        problem = LIMITS[self.key].problem(number)
        if problem:
            self.fail(f"{value!r}: {problem}", param, ctx)
        return number


def _tiles(ctx, param, value):
    """--tiles checked while the options are parsed: a usage error (exit 2), before any work."""
    from realtime.detector import parse_tiles
    from realtime.errors import RealtimeError

    try:
        return parse_tiles(value)
    except RealtimeError as e:
        raise click.BadParameter(str(e).removeprefix("--tiles "), ctx, param) from None


def analyzer_options(command):
    """Options shared by every command that runs the detector and the classifier."""
    from engines.registry import list_backends
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
        click.option("--min-score", type=Limited("min_score"), default=0.5, show_default=True,
                     help="Detector confidence threshold."),
        click.option("--tiles", default="auto", show_default=True, callback=_tiles,
                     help="Also detect on overlapping tiles for small faces: auto (frames of 1280 px and more), off, or N columns."),
        click.option("--crop-scale", type=Limited("crop_scale"), default=None,
                     help="Face crop side / detector box side (default: the model's own)."),
        click.option("--level-eyes/--no-level-eyes", default=None,
                     help="Turn each face crop so its eyes are level (default: as the model was trained, its level_eyes)."),
        click.option("--flip/--no-flip", default=True, show_default=True,
                     help="Test-time flip: average each face with its mirror image (2x classifier work, more accurate)."),
        click.option("--track/--no-track", default=None,
                     help="Track faces across frames: ids, smoothed labels, people counts "
                          "(default: on for video, off for images and folders of photos; --track for an image sequence)."),
        click.option("--smoothing", type=Limited("smoothing"), default=TrackerSettings.smoothing, show_default=True,
                     help="Label smoothing per track (forgetting factor; 0 = latest prediction only)."),
        click.option("--hysteresis", type=Limited("hysteresis"), default=TrackerSettings.hysteresis, show_default=True,
                     help="A track's shown label changes only when another leads by this probability margin."),
        click.option("--min-gender-confidence", type=Limited("min_gender_confidence"), default=None,
                     help="Show ? instead of a gender whose calibrated probability is under this "
                          "(default: the model's own, chosen by `realtime calibrate`; 0: always show)."),
        click.option("--reclassify-every", type=click.IntRange(1), default=TrackerSettings.reclassify_every, show_default=True,
                     help="Classify a confident track only every K frames (1 = every frame)."),
        click.option("--max-pixels", type=Limited("max_pixels", integer=True), default=50_000_000, show_default=True,
                     help="Refuse (in a folder: skip) images of more pixels than this, checked from the file's header before decoding."),
        reid_options,
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


def reid_options(command):
    """Re-identification: people, not tracks (see realtime.reid)."""
    options = [
        click.option("--reid/--no-reid", default=True, show_default=True,
                     help="Count people, not tracks: a face that comes back (lost track, cut, loop) is the same person "
                          "(face embeddings, memory only). --no-reid: every track is a person."),
        click.option("--reid-model", default=None,
                     help="Face-identity model: a path to hse_faceres.onnx, or 'dlib' (pip install 'realtime[dlib]') "
                          "(default: hse_faceres.onnx in $REALTIME_MODELS or the model cache, else none: people are tracks)."),
        click.option("--reid-window", type=FiniteFloat(1), default=300.0, show_default=True,
                     help="Seconds a person is remembered after they were last seen (then their embeddings are forgotten)."),
        click.option("--reid-threshold", type=FiniteFloat(-1, 1), default=None,
                     help="Cosine similarity from which a face is a person seen before (default: the model's; "
                          "higher: fewer wrong merges, more double counts)."),
        click.option("--reid-min-face", type=Limited("reid_min_face"), default=20.0, show_default=True, metavar="PX",
                     help="Quality gate: a face whose shorter side is under PX pixels is not embedded "
                          "(its track waits for a bigger view; a track that never shows one is not counted)."),
        click.option("--reid-min-contrast", type=Limited("reid_min_contrast"), default=14.0, show_default=True,
                     metavar="STD",
                     help="Quality gate: a face whose grey levels (the box at 32 px) vary less than this standard "
                          "deviation is not embedded: dark or blurred (0: no contrast gate)."),
        click.option("--reid-across-sources", is_flag=True,
                     help="With several sources, a person seen by one source may be recognised by another."),
        click.option("--second-opinion/--no-second-opinion", default=True, show_default=True,
                     help="With faceres as the identity model, each track's gender and age are the model's fused half and "
                          "half with faceres' own (its gender re-centred), from the same run: more often right (README)."),
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


def reid_settings(kw: dict):
    """ReidSettings from the re-identification options (popped from ``kw``)."""
    from realtime.reid import ReidSettings

    return ReidSettings(enabled=kw.pop("reid"), model=kw.pop("reid_model"), window=kw.pop("reid_window"),
                        threshold=kw.pop("reid_threshold"), min_side=kw.pop("reid_min_face"),
                        min_contrast=kw.pop("reid_min_contrast"), across_sources=kw.pop("reid_across_sources"),
                        second_opinion=kw.pop("second_opinion"))


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


def live_options(command):
    """Options shared by the live commands (`run`, `serve`): sources and outputs."""
    options = [
        click.option("--source", "sources", multiple=True, envvar="REALTIME_SOURCE",
                     help="Camera index, video file, image, folder, or rtsp:// / http:// URL; repeat for several sources "
                          "(default: $REALTIME_SOURCE, else camera 0)."),
        click.option("--source-file", type=click.Path(dir_okay=False), default=None,
                     help="Read the sources from this file, one a line (a URL with a password need not appear in `ps`)."),
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


def integrations(kw: dict):
    """The connected :class:`realtime.integrations.Integrations` of the options (popped
    from ``kw``), to use in ``with``."""
    from realtime.integrations import IntegrationSettings, Integrations

    return Integrations(IntegrationSettings(
        mqtt=kw.pop("mqtt"), mqtt_interval=kw.pop("mqtt_interval"), mqtt_ca=kw.pop("mqtt_ca"),
        webhook=kw.pop("webhook"), webhook_secret=kw.pop("webhook_secret")))


def output_settings(kw: dict, **where):
    """OutputSettings of ``where`` (media, json, summary, show), the encoder options and
    --blur (popped from ``kw``)."""
    from realtime.wiring import OutputSettings

    return OutputSettings(**where, encoder_threads=kw.pop("encoder_threads"), encoder_lookahead=kw.pop("encoder_lookahead"),
                          blur=kw.pop("blur"))


def analyzer_settings(kw: dict):
    """AnalyzerSettings from the shared options (popped from ``kw``)."""
    from realtime.analyzer import AnalyzerSettings
    from realtime.tracker import TrackerSettings

    return AnalyzerSettings(
        model=kw.pop("model"), backend=kw.pop("backend"), detector_model=kw.pop("detector_model"),
        detector_range=kw.pop("detector_range"), min_score=kw.pop("min_score"), tiles=kw.pop("tiles"),
        crop_scale=kw.pop("crop_scale"), level_eyes=kw.pop("level_eyes"), flip=kw.pop("flip"),
        track=kw.pop("track"), min_gender_confidence=kw.pop("min_gender_confidence"),
        tracker=TrackerSettings(smoothing=kw.pop("smoothing"), hysteresis=kw.pop("hysteresis"),
                                reclassify_every=kw.pop("reclassify_every")),
        max_pixels=kw.pop("max_pixels"),
        reid=reid_settings(kw),
    )


@contextlib.contextmanager
def progress(desc: str):
    """A tqdm bar driven by the pipeline's callbacks."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(desc=desc, unit="frame", dynamic_ncols=True, file=sys.stderr, disable=None)
    faces = 0

    def on_start(source):
        signals.run_started()
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


def finish(stats, json_to_stdout: bool) -> None:
    """Print the run's summary; an interrupted run exits 130 (its outputs are complete),
    one with a source given up (no frames for --reconnect-timeout) 1."""
    click.echo(stats.summary(), err=json_to_stdout)
    signals.command_done()
    if stats.interrupted:
        sys.exit(130)
    if stats.gave_up:  # a camera or stream that never came back is a failure (the log says which)
        sys.exit(1)


