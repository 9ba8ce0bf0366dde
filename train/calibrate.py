"""`realtime calibrate`: fit a model's temperatures on a validation set through the app's
preprocessing, choose its gender confidence, and write them into a copy of the
checkpoint (same weights; see :mod:`train.calibration` for the numbers)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from engines.errors import RealtimeError
from engines.files import read_checkpoint_meta
from engines.limits import check_fields
from engines.model import load_checkpoint, save_checkpoint
from train import metrics
from train.calibration import GENDER_TARGET, calibration_report, fit_temperature, gender_threshold
from train.evaluate import EvalSettings, calibrated_outputs, run_model

log = logging.getLogger(__name__)


@dataclass
class CalibrateSettings:
    """``realtime calibrate``: ``model`` (a .safetensors checkpoint) on the validation set
    ``eval`` (its model field is ``model``), written with its temperatures and gender
    threshold to ``output``; ``target``: the accuracy the shown genders must reach.
    ``eval.level_eyes`` (True / False; None: the model's own) is both how the faces are
    cut for the fit and the ``level_eyes`` written into the output's meta."""

    model: Path
    output: Path
    eval: EvalSettings
    target: float = GENDER_TARGET

    def __post_init__(self) -> None:
        check_fields(self, ("target",))  # the one table of limits


def calibrate_model(settings: CalibrateSettings, progress=None) -> dict:
    """Fit, choose, write; returns the report (temperatures, threshold, ECE before/after)."""
    model, output = Path(settings.model), Path(settings.output)
    if model.suffix != ".safetensors" or output.suffix != ".safetensors":
        raise RealtimeError("calibrate reads and writes .safetensors checkpoints (then export it: realtime convert --model OUT --format onnx -o OUT.onnx)")
    if output.exists() and output.resolve() == model.resolve():
        raise RealtimeError(f"{output}: is the model itself; write the calibrated model to a new file")
    read_checkpoint_meta(model)  # one line before the data is read, for a file that is not a model
    # the temperatures are the network's own: no second opinion in the fit
    raw, engine, _ = run_model(dataclasses.replace(settings.eval, model=model, second_opinion=False, faceres=None), progress)
    lab = raw.labels
    if not (lab.gender >= 0).any():
        raise RealtimeError(f"{settings.eval.data}: no face with a known gender; calibrate on a set with genders")
    # a head whose labels the set lacks (LFW's ages) keeps the temperature it had
    age_t = fit_temperature(raw.age_probs, lab.age_group) if (lab.age_group >= 0).any() else engine.meta.temperature[0]
    temperature = (age_t, fit_temperature(raw.gender_probs, lab.gender))
    level = engine.meta.level_eyes if settings.eval.level_eyes is None else settings.eval.level_eyes
    meta = dataclasses.replace(engine.meta, temperature=temperature, level_eyes=level)
    out = calibrated_outputs(raw, meta)
    threshold = round(gender_threshold(out.gender_probs, lab.gender, settings.target), 4)
    meta = dataclasses.replace(meta, min_gender_confidence=threshold)
    partial = output.with_name(output.name + ".partial")
    try:  # written beside the output, then renamed: whole or not at all
        save_checkpoint(load_checkpoint(model), partial, meta=meta, half=_is_half(model))
        partial.replace(output)
    except OSError as e:
        raise RealtimeError(f"{output}: cannot be written ({e.strerror or e})") from None
    finally:
        partial.unlink(missing_ok=True)
    report = metrics.clean(calibration_report(raw, out, meta))
    report.update(model=str(model), output=str(output), images=len(lab), target=settings.target)
    log.info("wrote %s: temperatures %s, min gender confidence %.3f", output, temperature, threshold)
    return report


def _is_half(path: Path) -> bool:
    """Whether a checkpoint stores its floating point weights as float16 (kept so)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
