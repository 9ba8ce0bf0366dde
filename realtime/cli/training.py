"""`realtime train`, `eval` and `sheet`: parse, build settings, call the training
library, print."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from realtime.cli.options import Limited
from train.formats import FORMATS

_FORMAT = click.Choice(FORMATS)
_PATH = click.Path(path_type=Path)
#: an option naming a file or folder, given to the library as a Path
path_option = functools.partial(click.option, type=_PATH)


def _tqdm_progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, unit="it", dynamic_ncols=True)


def data_options(command, multiple: bool = False):
    """--data and --format, shared by train (``multiple``: repeatable, paired in order) and eval."""
    more = " Repeat with --data for several sets, paired in order (one --format: the same for all)." if multiple else ""
    command = click.option("--format", "fmt", type=_FORMAT, required=True, multiple=multiple, help="Layout of --data." + more)(command)
    return click.option(
        "--data", type=_PATH, required=True, multiple=multiple,
        help="Labelled face set (folder, or CSV file for --format csv)." + (" Repeatable." if multiple else ""),
    )(command)


def scoring_options(command):
    """The options of a pass of a model over a labelled set as the app sees it, shared by
    eval and calibrate: --cropped, --context, --detector-range, --flip, --holdout,
    --limit, --batch-size (each checked against the one table of limits)."""
    options = [
        click.option("--cropped", is_flag=True, help="Each image is already one face crop (no detector)."),
        click.option("--context", type=Limited("context"), default=1.0, show_default=True,
                     help="With the detector: set each image in a frame this many times its side first (tight chips: 2)."),
        click.option("--detector-range", type=click.Choice(["full", "short"]), default="full", show_default=True,
                     help="MediaPipe detector model, as in the app (full: crowds, faces up to ~5 m; short: close faces)."),
        click.option("--flip/--no-flip", default=True, show_default=True, help="Test-time flip, as in the app."),
        click.option("--holdout", type=Limited("holdout"), default=None,
                     help="Only the share held out by `train --folds 1 --holdout` with this fraction (the model's validation)."),
        click.option("--limit", type=Limited("limit", integer=True), default=None, help="Only the first N images."),
        click.option("--batch-size", type=Limited("batch_size", integer=True), default=64, show_default=True),
    ]
    return functools.reduce(lambda c, option: option(c), reversed(options), command)


@click.command("train")
@functools.partial(data_options, multiple=True)
@path_option("--out", default=Path("runs/train"), show_default=True, help="Folder for folds, logs, summary, plots.")
@click.option(
    "--folds", type=Limited("folds", integer=True), default=5, show_default=True,
    help="k-fold cross-validation (Adience: official folds); 1: one run with --holdout.",
)
@click.option(
    "--holdout", type=Limited("holdout"), default=0.15, show_default=True,
    help="With --folds 1: share of the images held out (identical images together).",
)
@click.option("--arch", default="mobilenetv3_small_100", show_default=True, help="Any timm model name, e.g. resnet50.")
@click.option("--input-size", type=Limited("input_size", integer=True), default=112, show_default=True)
@click.option(
    "--crop-scale", type=Limited("crop_scale"), default=1.15, show_default=True,
    help="Crop side / detector box side the app will use (goes into the meta); 1.15 frames a MediaPipe box like a UTKFace chip (measured).",
)
@click.option(
    "--level-eyes/--no-level-eyes", default=None,
    help="The model levels its crops by the eyes (level_eyes in its meta): train it on crops cut by `realtime facecrops "
    "--level-eyes` (and aligned chips). Default: as the sets' facecrops.json say; a set cut otherwise is refused.",
)
@click.option("--epochs", type=Limited("epochs", integer=True), default=40, show_default=True)
@click.option("--batch-size", type=Limited("batch_size", integer=True), default=128, show_default=True, help="Per process (per GPU under torchrun).")
@click.option(
    "--lr", type=Limited("lr"), default=3e-3, show_default=True,
    help="Peak learning rate of the one-cycle schedule (AdamW).",
)
@click.option("--weight-decay", type=Limited("weight_decay"), default=0.05, show_default=True)
@click.option("--label-smoothing", type=Limited("label_smoothing"), default=0.1, show_default=True)
@click.option(
    "--class-weights/--no-class-weights", default=False, show_default=True,
    help="Inverse-frequency class weights.",
)
@click.option("--years-weight", type=Limited("years_weight"), default=0.1, show_default=True, help="Weight of the L1 age-in-years loss.")
@click.option(
    "--years-bins", type=int, default=0, show_default=True,
    help="0: a linear age-in-years head; N (e.g. 101): a distribution over the ages 0..N-1 (DLDL).",
)
@click.option("--drop-rate", type=Limited("drop_rate"), default=0.2, show_default=True, help="Dropout before the heads.")
@click.option("--no-augment", is_flag=True, help="Train on the plain app crops.")
@click.option("--wild-augment", is_flag=True,
              help="Augment also for faces in the wild: looser, off-centre framing, grayscale, motion blur, occlusion, hard light.")
@click.option("--pretrained", is_flag=True, help="Start from timm's ImageNet weights (needs the internet).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=Limited("workers", integer=True), default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--resume", is_flag=True, help="Continue from each fold's last.pt; finished folds are kept.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--no-amp", is_flag=True, help="No mixed precision on CUDA.")
@click.option("--threads", type=Limited("threads", integer=True), default=None, help="torch CPU threads.")
@click.option("--limit", type=Limited("limit", integer=True), default=None, help="Use only the first N images of each set (quick checks).")
@click.option("--image-side", type=Limited("image_side", integer=True), default=None,
              help="Hold the images in RAM at this side (default: the first set's image size); 128 holds 35,000 faces in 1.7 GB.")
@click.option("--trained-on", default="", help="Text for the model's meta: the data and its terms.")
@path_option("--save", default=None, help="Also write the (last fold's) final model here, float16.")
@click.option(
    "--fold", "only_folds", type=int, multiple=True,
    help="Train only this fold of --folds (repeatable), e.g. one fold per process or GPU into the same --out; "
    "the summary counts the folds finished there.",
)
@path_option("--init", default=None, help="Start from this checkpoint's weights (fine-tuning), e.g. engines/weights/default.safetensors.")
@click.option("--init-member", type=Limited("init_member", integer=True), default=0, show_default=True,
              help="With an ensemble as --init: which of its networks to start from.")
@path_option("--teacher", "teachers", multiple=True, help="Distil from this trained model (repeatable: their predictions are averaged) on every augmented batch.")
@click.option(
    "--distill", type=Limited("distill"), default=0.5, show_default=True,
    help="With --teacher or --teacher-cache: weight of the teachers' soft targets against the labels (0-1).",
)
@click.option(
    "--teacher-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Distil from teachers trained on other faces, their outputs cached by `realtime teach` (.npz).",
)
@click.option(
    "--feature-weight", type=Limited("feature_weight"), default=0.0, show_default=True,
    help="With --teacher-cache: weight of matching faceres' 1024-d face feature (through a projection; 0: off).",
)
@click.option(
    "--calibrate-teachers/--no-calibrate-teachers", default=True, show_default=True,
    help="With --teacher-cache: re-centre each teacher's gender on each set's training faces (Platt scaling, genders "
    "weighted equally) before its soft targets are used.",
)
@click.option(
    "--age-groups", default="adience", show_default=True,
    help="Age scheme of the age head: adience (8 groups), 5y (0-4, 5-9, ..., 95+) or lower bounds B1,B2,... (13,20,30: 0-12, 13-19, 20-29, 30+).",
)
@click.option(
    "--balance/--no-balance", default=None,
    help="Draw so that genders and UTKFace race groups come equally often within each set "
    "(default: on with several --data, off with one).",
)
@click.option(
    "--balance-race/--no-balance-race", default=True, show_default=True,
    help="With balanced drawing: even UTKFace's race groups too (off: genders only, races as they come).",
)
def train_command(fmt, no_augment, wild_augment, no_amp, **options):
    """Train age/gender models with k-fold cross-validation (or one held-out run)."""
    from engines.errors import require

    for module in ("torch", "timm"):
        require(module, "realtime train")
    from train.fit import cross_validate
    from train.trainer import TrainSettings

    settings = TrainSettings(
        format=tuple(fmt),
        augment=_augment(no_augment, wild_augment),
        amp=not no_amp,
        **{**options, "data": tuple(options["data"])},
    )

    def on_epoch(fold: int, row: dict) -> None:
        from tqdm import tqdm

        tqdm.write(
            f"fold {fold} epoch {row['epoch']}: val loss {row['val_loss']:.3f}, age {100 * row['age_exact']:.1f}% "
            f"(1-off {100 * row['age_one_off']:.1f}%), gender {100 * row['gender_acc']:.1f}%, MAE {row['mae']:.2f}, "
            f"{row['seconds']:.0f} s",
            file=sys.stderr,
        )

    summary = cross_validate(settings, progress=_tqdm_progress, on_epoch=on_epoch)
    if summary:
        click.echo((settings.out / "summary.md").read_text())
        if "saved" in summary:
            click.echo(f"model written to {summary['saved']}")


def _augment(no_augment: bool, wild_augment: bool):
    from train.augment import AugmentSettings

    if no_augment and wild_augment:
        raise click.UsageError("--no-augment and --wild-augment contradict each other; give one")
    return AugmentSettings.off() if no_augment else AugmentSettings.wild() if wild_augment else AugmentSettings()


@click.command("eval")
@data_options
@path_option("--model", default=None, help="Checkpoint (.safetensors) or .onnx; default: the app's default model.")
@click.option("--backend", default="auto", show_default=True, help="Engine backend, as in the app.")
@scoring_options
@click.option("--level-eyes/--no-level-eyes", default=None,
              help="Level each face crop by its eyes, as in the app (default: the model's own level_eyes).")
@path_option("--predictions", required=True, help="CSV to write: file, age_group, age, gender, gender_prob.")
@path_option("--json", "json_path", default=None, help="Also write all metrics as JSON.")
@click.option("--range", "old_range", type=click.Choice(["full", "short"]), default=None, hidden=True,
              help="Deprecated: --detector-range.")
@path_option("--markdown", "markdown_path", default=None, help="Also write the metric tables as Markdown.")
@click.option("--bootstrap", type=Limited("bootstrap", integer=True), default=1000, show_default=True, help="Resamples for 95% intervals (0: none).")
@click.option("--second-opinion/--no-second-opinion", default=None,
              help="Score the gender the app shows once faceres has looked at a face: the model's fused with faceres' "
                   "own (README, 'A second opinion on gender and age'). Default: as the app, on when faceres is found; "
                   "--no-second-opinion: the model alone.")
@path_option("--faceres", default=None, help="hse_faceres.onnx for --second-opinion (default: from $REALTIME_MODELS or the model cache).")
def eval_command(fmt, json_path, markdown_path, old_range, **options):
    """Score a model on a labelled set through the app's own preprocessing."""
    if old_range is not None:
        click.echo("warning: --range is deprecated; use --detector-range", err=True)
        options["detector_range"] = old_range
    from train.evaluate import EvalSettings, evaluate, format_metrics

    result = evaluate(EvalSettings(format=fmt, json=json_path, markdown=markdown_path, **options), progress=_tqdm_progress)
    click.echo(format_metrics(result))


@click.command("sheet")
@click.argument("source")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Image to write (.jpg/.png).")
@click.option("--every", type=Limited("every", integer=True), default=4, show_default=True, help="Take every N-th frame.")
@click.option("--max-faces", type=Limited("max_faces", integer=True), default=120, show_default=True)
@click.option("--columns", type=Limited("columns", integer=True), default=12, show_default=True)
@click.option("--scale", type=Limited("scale"), default=1.0, show_default=True, help="Draw each crop at this multiple of the model's input size.")
@click.option("--blur", is_flag=True, default=False, help="Refused: a contact sheet is made of faces.")
def sheet_command(source, output, every, max_faces, columns, scale, blur, **options):
    """A contact sheet of the face crops the classifier sees in SOURCE, with their labels."""
    if blur:
        raise click.UsageError("a contact sheet shows the faces themselves: it cannot be blurred (--blur is for annotate, run and serve)")
    from realtime.cli.options import analyzer_settings
    from train.sheet import SheetSettings, contact_sheet

    options.setdefault("track", False)
    result = contact_sheet(SheetSettings(source, output, analyzer_settings(options), every, max_faces, columns, scale))
    counts = ", ".join(f"{k} {v}" for k, v in result.labels.items())
    click.echo(f"{result.faces} faces from {result.frames} frames -> {result.output} ({counts})")


@click.command("calibrate")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@data_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The calibrated copy of MODEL to write (.safetensors; same weights, new metadata).")
@scoring_options
@click.option("--target", type=Limited("target"), default=0.97, show_default=True,
              help="Shown genders must be right at least this often: sets the model's --min-gender-confidence.")
@click.option("--level-eyes/--no-level-eyes", default=None,
              help="The calibrated model levels its crops by the eyes (level_eyes in its meta), and is fitted so "
                   "(default: MODEL's own level_eyes).")
@path_option("--json", "json_path", default=None, help="Also write the report as JSON.")
def calibrate_command(model, fmt, output, target, json_path, **options):
    """Fit MODEL's temperatures (gender and age) on a validation set, choose the gender
    confidence the overlay shows `?` under, and write them into a copy of MODEL."""
    import json

    from train.calibrate import CalibrateSettings, calibrate_model
    from train.evaluate import EvalSettings

    settings = CalibrateSettings(model, output, EvalSettings(format=fmt, bootstrap=0, **options), target)
    report = calibrate_model(settings, progress=_tqdm_progress)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    t, before, after, shown = report["temperature"], report["ece_before"], report["ece_after"], report["gender_shown"]
    click.echo(f"{report['images']} images: temperatures gender {t['gender']:g}, age {t['age']:g}")
    click.echo(f"calibration error (ECE) gender {100 * before['gender']:.1f}% -> {100 * after['gender']:.1f}%, "
               f"age {100 * before['age']:.1f}% -> {100 * after['age']:.1f}%" if before["age"] is not None else
               f"calibration error (ECE) gender {100 * before['gender']:.1f}% -> {100 * after['gender']:.1f}%")
    click.echo(f"min gender confidence {report['min_gender_confidence']:.3f}: genders shown {100 * shown['shown']:.1f}% "
               f"(right {100 * shown['accuracy_shown']:.1f}%)" if shown["accuracy_shown"] is not None else "no gender shown")
    for group, row in report["gender_shown_by_age_group"].items():
        if row["n"]:
            click.echo(f"  {group}: {100 * row['shown']:.0f}% shown of {row['n']}")
    click.echo(f"written to {output}")
