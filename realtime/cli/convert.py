"""`realtime convert`, `realtime ensemble` and `realtime soup`: the engine side's commands.

Thin: parse, build :class:`ConvertSettings`, call :func:`engines.convert.convert`, print.
Mistakes raise :class:`RealtimeError`, which the ``realtime`` CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from engines.convert import FORMATS, ConvertSettings, convert
from engines.errors import RealtimeError
from realtime.cli.options import Limited

_FILE = click.Path(path_type=Path, dir_okay=False)
_DIR = click.Path(path_type=Path, file_okay=False)


@click.command("convert")
@click.option("--model", type=_FILE, default=None, help="Checkpoint (.safetensors) to convert [default: the default model].")
@click.option("-o", "--output", type=_FILE, default=None,
              help="Output file: .engine/.plan, .onnx or .xml [default: the cache the backends read].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: from the output's suffix, else tensorrt].")
@click.option("--fp16", is_flag=True, help="TensorRT fp16 engine; OpenVINO fp16 weights at reduced precision.")
@click.option("--int8", is_flag=True, help="TensorRT INT8 engine, calibrated on --calib.")
@click.option("--calib", type=_DIR, default=None, help="Folder of face crop images for INT8 calibration (and --check).")
@click.option("--max-batch", type=Limited("max_batch", integer=True), default=32, show_default=True, help="Largest batch of the TensorRT profile.")
@click.option("--opt-batch", type=Limited("opt_batch", integer=True), default=8, show_default=True, help="Batch TensorRT tunes for (a typical face count).")
@click.option("--converter", type=click.Choice(["onnx", "torch2trt"]), default="onnx", show_default=True,
              help="Build TensorRT engines from the ONNX export or with torch2trt.")
@click.option("--check", is_flag=True, help="Compare the result with eager PyTorch on real face crops.")
@click.option("--check-images", type=_DIR, default=None, help="Folder of face crop images for --check [default: --calib].")
def convert_command(model, output, fmt, fp16, int8, calib, max_batch, opt_batch, converter, check, check_images):
    """Convert a checkpoint to a TensorRT engine, ONNX or OpenVINO IR.

    \b
    realtime convert --model m.safetensors --fp16 --max-batch 32 -o m.engine --check --check-images faces/
    realtime convert --model m.safetensors -o m.xml --check --check-images faces/
    """
    settings = ConvertSettings(
        model=model, output=output, format=fmt, fp16=fp16, int8=int8, calib=calib, max_batch=max_batch,
        opt_batch=opt_batch, converter=converter, check=check, check_images=check_images,
    )
    result = convert(settings)
    click.echo(result.summary())
    if result.check is not None and not result.check.ok:
        raise RealtimeError(f"{result.output}: differs from torch by {result.check.max_abs_diff:.2e} "
                            f"(over {result.check.tolerance:.0e}); rebuild without --fp16/--int8 or check the model")


@click.command("ensemble")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", type=_FILE, required=True, help="The ensemble checkpoint to write (.safetensors).")
@click.option("--trained-on", default="", help="Text for its meta [default: the members' texts].")
def ensemble_command(models, output, trained_on):
    """Combine trained checkpoints into one model that averages them.

    \b
    realtime ensemble a.safetensors b.safetensors -o ab.safetensors
    realtime eval --model ab.safetensors ...   # then evaluate, convert or run it like any model

    The members must share input size, normalisation, framing and labels; each face then
    costs the sum of their inference times.
    """
    from engines.model import save_ensemble

    path = save_ensemble(list(models), output, trained_on)
    click.echo(f"ensemble of {len(models)} models written to {path}")


@click.command("soup")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--weights", default=None, help="One weight per model, summing to 1, e.g. 0.5,0.5 [default: equal].")
@click.option("-o", "--output", type=_FILE, required=True, help="The averaged checkpoint to write (.safetensors).")
@click.option("--trained-on", default="", help="Text for its meta [default: the models' texts with their weights].")
def soup_command(models, weights, output, trained_on):
    """Average models of one architecture in weight space into one model.

    \b
    realtime soup start.safetensors tuned.safetensors --weights 0.5,0.5 -o half.safetensors

    For models fine-tuned from one another (a fine-tune and the model it started from
    gives back much of what the fine-tune cost on the old data); the result costs one
    model's inference. Calibrate it afterwards (`realtime calibrate`).
    """
    from engines.model import save_soup

    try:
        parsed = tuple(float(w) for w in weights.split(",")) if weights else None
    except ValueError:
        raise RealtimeError(f"--weights {weights}: give numbers separated by commas, e.g. 0.5,0.5") from None
    path = save_soup(list(models), parsed, output, trained_on)
    click.echo(f"average of {len(models)} models written to {path}")
