"""`realtime facecrops` and `realtime teach`: the data a student learns from, made once
(the app's detector crops of a photo set; the teachers' outputs over the training faces)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from realtime.cli.options import Limited
from realtime.cli.training import _tqdm_progress, data_options


@click.command("facecrops")
@data_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="A new or empty folder for labels.csv and images/.")
@click.option("--side", type=Limited("side", integer=True), default=128, show_default=True, help="Pixels of each written crop.")
@click.option("--crop-scale", type=Limited("crop_scale"), default=1.15, show_default=True, help="Crop side / detector box side (the app's framing).")
@click.option("--detector-range", type=click.Choice(["full", "short"]), default="full", show_default=True)
@click.option("--level-eyes/--no-level-eyes", default=False, show_default=True,
              help="Turn each crop so the detector's eyes are level, as the app does for a model trained on them "
              "(recorded in facecrops.json; `realtime train` on the set then writes level_eyes into the model).")
def facecrops_command(fmt, **options):
    """Cut the largest detected face of every labelled photo into a CSV set of chips."""
    from train.facecrops import FaceCropSettings, write_face_crops

    counts = write_face_crops(FaceCropSettings(format=fmt, **options), progress=_tqdm_progress)
    levelled = f", {counts['levelled']} levelled by their eyes" if options["level_eyes"] else ""
    click.echo(f"{counts['written']} crops written to {options['out']} ({counts['no_face']} photos without a face, "
               f"{counts['unreadable']} unreadable{levelled})")


@click.command("teach")
@functools.partial(data_options, multiple=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The cache to write (.npz).")
@click.option("--faceres", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="hse_faceres.onnx (default: from $REALTIME_MODELS or the model cache).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Our teacher model (default: the default weights).")
@click.option("--batch-size", type=Limited("batch_size", integer=True), default=64, show_default=True)
@click.option("--threads", type=Limited("threads", integer=True), default=2, show_default=True)
@click.option("--flip/--no-flip", default=True, show_default=True, help="faceres also sees each face mirrored (the two views averaged).")
def teach_command(fmt, **options):
    """Run the teachers once over every training face and cache their outputs."""
    from train.teach import TeachSettings, build_cache

    counts = build_cache(TeachSettings(format=tuple(fmt), **{**options, "data": tuple(options["data"])}), progress=_tqdm_progress)
    click.echo(f"{counts['unique']} faces taught ({counts['faces']} listed, {counts['unreadable']} unreadable): {options['output']}")
