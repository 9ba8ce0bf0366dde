"""Evaluate a model on a labelled set exactly as the app sees faces.

Each image goes through the app's path, the :class:`realtime.analyzer.Analyzer`: its
detector with the app's tiling (largest face; the whole image when it finds none,
counted) and its cropper, or with ``cropped`` ``Cropper.crop_whole`` (the image is
one face crop); then the app's engine (``make_engine``, test-time flip included).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import cv2
import numpy as np

from engines.calibration import calibrated
from engines.images import read_image
from engines.limits import check_fields
from engines.meta import AGE_LABELS, ModelMeta
from engines.registry import Engine
from engines.writes import check_distinct, check_outputs, json_text, write_atomic
from realtime.analyzer import AnalyzerSettings, make_engine
from realtime.crops import Cropper
from realtime.opinion import FACERES_PLATT, MIN_YEARS, WEIGHT, Opinion, fuse, looks, supported, takes_gender
from realtime.reid import ReidSettings
from realtime.errors import RealtimeError
from train import metrics
from train.ages import NAMED, AgeScheme, relabel, scheme_name
from train.calibration import calibration_report
from train.data import LabelledSet, holdout_mask
from train.formats import label_files, load_dataset
from train.labels import RACE_LABELS

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("file", "age_group", "age", "gender", "gender_prob")


@dataclass
class EvalSettings:
    """One evaluation.

    Attributes:
        data, format: the labelled set and its layout (``adience``, ``utkface``, ``csv``).
        predictions: CSV to write (None: none), one row per image: file, age_group (label), age
            (years, regression head), gender (label), gender_prob (probability of that gender).
        model: a .safetensors or .onnx model; None for the app's default weights.
        backend: engine backend, as in the app ("auto" picks the fastest installed).
        cropped: the images are face crops already (no detector).
        flip: test-time flip, as in the app (``FlipAveraged``).
        level_eyes: level each detected face's crop by its eyes, as the app's
            ``--level-eyes``; None = the model's own (``meta.level_eyes``).
        json: also write the metrics here.
        detector_range: "full" or "short" MediaPipe model when not ``cropped``.
        context: with the detector, first set each image in a frame ``context`` times
            its side (edges replicated), as a face sits in a photo or video frame
            (MediaPipe misses many tight chips taken as they are: README, the default
            model).
        batch_size: crops per engine call.
        limit: only the first N images.
        holdout: only the held-out share of a ``train --folds 1 --holdout`` run with this
            fraction (same deterministic split), to score a model on faces it never saw.
        bootstrap: resamples for the 95% intervals (0: none).
        second_opinion: score the gender and age the app shows once faceres has looked
            at the face (every photo's; a track's from its confirmation): the model's fused
            with faceres' own on the same face (:mod:`realtime.opinion`; faceres' crop is
            1.5x the detected box, or of the face an image without a detected face spans).
            None = as the app does: on when faceres is found (or given) and the model
            is labelled female/male; False = the model alone.
        faceres: ``hse_faceres.onnx`` for the second opinion (None: found as
            re-identification finds it).
    """

    data: Path
    format: str
    predictions: Path | None = None
    model: Path | None = None
    backend: str = "auto"
    cropped: bool = False
    flip: bool = True
    level_eyes: bool | None = None
    json: Path | None = None
    detector_range: str = "full"
    context: float = 1.0
    batch_size: int = 64
    limit: int | None = None
    holdout: float | None = None
    bootstrap: int = 1000
    markdown: Path | None = None
    second_opinion: bool | None = None
    faceres: Path | None = None

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        if self.second_opinion is not False and self.faceres is None:
            from realtime.embedders import find_faceres

            self.faceres = find_faceres()
            if self.faceres is None and self.second_opinion:
                raise RealtimeError("--second-opinion needs hse_faceres.onnx: give --faceres PATH or run "
                                    "`realtime models fetch --from ../shared/models`")
        if self.second_opinion is False:
            self.faceres = None
        if self.faceres is not None:
            self.faceres = Path(self.faceres)
            if not self.faceres.is_file():
                raise RealtimeError(f"--faceres {self.faceres}: no such file" if not self.faceres.exists() else
                                    f"--faceres {self.faceres}: not a file")
        if self.predictions is not None:
            self.predictions = Path(self.predictions)
        if self.model is not None:
            self.model = Path(self.model)
        if self.json is not None:
            self.json = Path(self.json)
        if self.markdown is not None:
            self.markdown = Path(self.markdown)
        check_outputs(self.inputs(), self.outputs())
        check_fields(self)  # the one table of limits


    def inputs(self) -> list[Path]:
        """The files read besides the images: the labels and the model."""
        return [*label_files(self.data), *(p for p in (self.model, self.faceres) if p is not None)]

    def outputs(self) -> list[tuple[str, Path | None]]:
        return [("--predictions", self.predictions), ("--json", self.json), ("--markdown", self.markdown)]


@dataclass
class Outputs:
    """Engine outputs for the M images that could be read: labels + predictions."""

    labels: LabelledSet
    age_probs: np.ndarray  # (M, A) float32
    gender_probs: np.ndarray  # (M, G) float32
    age_years: np.ndarray  # (M,) float32
    opinion: Opinion | None = None  # faceres' answers on the M faces (the second opinion)


def evaluate(settings: EvalSettings, progress: Callable[[int, str], ContextManager] | None = None) -> dict:
    """Run the model over ``settings.data``, write the predictions CSV (and JSON), and
    return the metrics (see :func:`score`), with the calibration error of the network's
    own probabilities and of the calibrated ones the app shows (``calibration``)."""
    raw, engine, counts = run_model(settings, progress)
    out = calibrated_outputs(raw, engine.meta)
    op = out.opinion
    if op is not None:  # the app's answer once faceres has looked
        alone = score(dataclasses.replace(out, gender_probs=op.gender, age_probs=op.age, age_years=op.years), engine.meta, bootstrap=0)
        gender, age, years = fuse(out.gender_probs, out.age_probs, out.age_years, op)
        out = dataclasses.replace(out, gender_probs=gender, age_probs=age, age_years=years)
    if settings.predictions is not None:
        write_predictions(out, engine.meta, settings.predictions)
    result = score(out, engine.meta, bootstrap=settings.bootstrap)
    result["calibration"] = calibration_report(raw, out, engine.meta)
    if op is not None:
        result["second_opinion"] = {
            "faceres": settings.faceres.name, "platt": list(FACERES_PLATT), "weight": WEIGHT, "min_years": MIN_YEARS,
            "gender_fused": float(np.mean(takes_gender(out.age_years))),  # the share of faces whose gender took it
            "faceres_alone": {k: alone["overall"].get(k) for k in ("gender_acc", "gender_balanced", "gender_acc_13plus",
                                                                    "age_exact", "age_one_off", "mae")},
            "by_gender_alone": {g: row.get("gender_acc") for g, row in alone["by_gender"].items()}}
    result.update(
        {
            "model": str(settings.model) if settings.model else "default",
            "backend": engine.name,
            "data": str(settings.data),
            "format": settings.format,
            "cropped": settings.cropped,
            "context": None if settings.cropped else settings.context,
            "holdout": settings.holdout,
            "images": len(out.labels),
            "skipped": out.labels.skipped,
            "no_face": counts["no_face"],
            "model_size": model_size(settings.model, engine.meta),
        }
    )
    result = metrics.clean(result)
    if settings.json is not None:
        write_atomic(settings.json, json_text(result, indent=2), "--json")
    if settings.markdown is not None:
        from train.report import eval_markdown

        write_atomic(settings.markdown, eval_markdown(result), "--markdown")
    return result


def run_model(settings: EvalSettings, progress: Callable[[int, str], ContextManager] | None = None) -> tuple[Outputs, Engine, dict]:
    """The app's engine over ``settings.data``: (its uncalibrated outputs, labelled in the
    model's age scheme; the engine; counts of unreadable images and images without a
    detected face)."""
    from train.trainer import _null_progress

    progress = progress or _null_progress
    data = load_dataset(settings.data, settings.format)
    if settings.holdout is not None:
        data = data[holdout_mask(data, settings.holdout)]
    if settings.limit:
        data = data[np.arange(min(settings.limit, len(data)))]
    check_distinct([*settings.inputs(), *data.files], [(w, p) for w, p in settings.outputs() if p is not None])
    app = AnalyzerSettings(model=settings.model, backend=settings.backend, detector_range=settings.detector_range,
                           flip=settings.flip, level_eyes=settings.level_eyes, track=False,
                           reid=ReidSettings(enabled=False, second_opinion=False))  # the opinion, if asked, is run below
    analyzer = None if settings.cropped else _analyzer(app)
    engine = analyzer.engine if analyzer is not None else make_engine(app)
    cropper = analyzer.cropper if analyzer is not None else Cropper(engine.meta)
    detector = analyzer.detector if analyzer is not None else None
    faceres = _faceres(settings, engine.meta)
    keep, chunks, batch, looked = [], [], [], []
    counts = {"unreadable": 0, "no_face": 0}

    def flush():
        if batch:
            chunks.append(engine.infer_raw(np.concatenate(batch)))
            batch.clear()

    try:
        with progress(len(data), "evaluating") as bar:
            for i, path in enumerate(data.files):
                try:
                    image = read_image(path)
                except RealtimeError as e:
                    image = None
                    log.warning("skipping %s", e)
                bar.update(1)
                if image is None:
                    counts["unreadable"] += 1
                    continue
                framing = float(data.framing[i]) * settings.context  # a wider crop's face, where its set records it
                image = in_context(image, settings.context)
                crop, box = _face_input(image, cropper, detector, counts, framing)
                batch.append(crop)
                if faceres is not None:
                    looked.append(faceres.look(image, box[None])[1:])
                keep.append(i)
                if len(batch) >= settings.batch_size:
                    flush()
            flush()
    finally:
        if analyzer is not None:
            analyzer.close()
    if not keep:
        raise RealtimeError(f"{settings.data}: none of the {len(data)} images could be read")
    labels = data[np.asarray(keep)]
    labels.skipped = data.skipped + counts["unreadable"]
    if engine.meta.age_labels != AGE_LABELS:  # the labels in the model's own scheme
        labels.age_group = relabel(labels.age_group, labels.age_years, AgeScheme.from_labels(engine.meta.age_labels))
    out = Outputs(labels, *(np.concatenate([getattr(c, f) for c in chunks]) for f in ("age_probs", "gender_probs", "age_years")),
                  opinion=looks(*(np.concatenate(a) for a in zip(*looked)), engine.meta.gender_labels, engine.meta.age_labels)
                  if faceres is not None else None)
    return out, engine, counts


def _faceres(settings: EvalSettings, meta: ModelMeta):
    """The second opinion's network (re-identification's faceres embedder), or None: not
    asked for, or (by default) no faceres found or a model that cannot take it."""
    from realtime.embedders import FaceresEmbedder

    if settings.faceres is None:
        return None
    if not supported(meta):
        if settings.second_opinion:
            raise RealtimeError(f"--second-opinion: the model's labels ({list(meta.gender_labels)}, {list(meta.age_labels)}) "
                                "are not female/male and ranges of years")
        return None
    log.info("gender and age: the model's with faceres' second opinion (%s; --no-second-opinion: the model alone)", settings.faceres)
    return FaceresEmbedder(settings.faceres, option="--faceres")


def calibrated_outputs(raw: Outputs, meta: ModelMeta) -> Outputs:
    """``raw`` with the model's temperatures applied, as every engine's ``infer`` does."""
    age, gender = calibrated(raw.age_probs, raw.gender_probs, meta.temperature)
    return dataclasses.replace(raw, age_probs=age, gender_probs=gender)


def _analyzer(settings: AnalyzerSettings):
    try:
        from realtime.analyzer import Analyzer
    except ImportError as e:
        raise RealtimeError(f"the face detector is not available ({e}); use --cropped for face crops") from None
    return Analyzer(settings)


def in_context(image: np.ndarray, context: float) -> np.ndarray:
    """BGR (H, W, 3) -> the image centred in a frame ``context`` times its size, edges
    replicated (the same image when ``context`` is 1)."""
    if context <= 1.0:
        return image
    h, w = image.shape[:2]
    dy, dx = round(h * (context - 1) / 2), round(w * (context - 1) / 2)
    return cv2.copyMakeBorder(image, dy, dy, dx, dx, cv2.BORDER_REPLICATE)


def _face_input(image: np.ndarray, cropper: Cropper, detector, counts: dict,
                framing: float = float("nan")) -> tuple[np.ndarray, np.ndarray]:
    """One image -> its crop (1, 3, S, S) and the face's (4,) float32 xyxy box: its
    largest detected face, or the whole image (the face at the model's framing where
    ``framing``, the box sides the image spans, is known; else the image is the
    crop at the model's framing)."""
    if detector is not None:
        faces = detector.detect(image)
        if len(faces):
            k = int(np.argmax(faces.areas))
            return cropper.crop(image, faces[k]), faces.boxes[k].astype(np.float32)
        counts["no_face"] += 1
    box = cropper.whole_box(image, framing)
    return cropper.crop(image, box[None]), box


def write_predictions(out: Outputs, meta: ModelMeta, path: Path) -> None:
    """The predictions CSV, written whole to a new file renamed over ``path``."""
    gender = out.gender_probs.argmax(1)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(PREDICTION_COLUMNS)
    for name, a, years, g, gp in zip(out.labels.names(), out.age_probs.argmax(1), out.age_years, gender, out.gender_probs.max(1)):
        writer.writerow([name, meta.age_labels[a], f"{years:.1f}", meta.gender_labels[g], f"{gp:.4f}"])
    write_atomic(path, text.getvalue(), "--predictions")


def score(out: Outputs, meta: ModelMeta, bootstrap: int = 1000) -> dict:
    """Headline metrics (with 95% bootstrap intervals), per age group, gender and race
    group, and confusion matrices."""
    lab = out.labels
    cols = (out.age_probs.argmax(1), lab.age_group, out.gender_probs.argmax(1), lab.gender, out.age_years, lab.age_years)
    result: dict = {"overall": metrics.summary(*cols)}
    if bootstrap:
        result["ci95"] = {
            key: metrics.bootstrap_ci(cols, lambda *c, key=key: metrics.summary(*c)[key], samples=bootstrap)
            for key in ("age_exact", "age_one_off", "gender_acc", "gender_acc_13plus", "mae")
        }
    result["by_age_group"] = {name: metrics.summary(*(c[lab.age_group == k] for c in cols)) for k, name in enumerate(meta.age_labels)}
    result["by_gender"] = {name: metrics.summary(*(c[lab.gender == k] for c in cols)) for k, name in enumerate(meta.gender_labels)}
    each = [row["gender_acc"] for row in result["by_gender"].values() if row.get("n") and row.get("gender_acc") is not None]
    result["overall"]["gender_balanced"] = float(np.mean(each)) if len(each) == len(meta.gender_labels) else None
    if (lab.race >= 0).any():
        result["by_race"] = {name: metrics.summary(*(c[lab.race == k] for c in cols)) for k, name in enumerate(RACE_LABELS)}
    result["age_confusion"] = metrics.confusion(cols[0], cols[1], len(meta.age_labels))
    result["gender_confusion"] = metrics.confusion(cols[2], cols[3], len(meta.gender_labels))
    result["labels"] = {"age": list(meta.age_labels), "gender": list(meta.gender_labels)}
    result["age_scheme"] = scheme_name(meta.age_labels)
    result["by_scheme"] = scheme_scores(out, meta)
    return result


def scheme_scores(out: Outputs, meta: ModelMeta) -> dict:
    """Exact and 1-off age group per scheme (``adience``, ``5y`` and the model's own):
    the model's age head in its own scheme (``"head"``), and in every scheme its age in
    years put into that scheme's groups (``"years"``), over the faces of known exact age."""
    exact = np.isfinite(out.labels.age_years)
    result = {}
    for labels in dict.fromkeys([NAMED["adience"], NAMED["5y"], tuple(meta.age_labels)]):
        scheme = AgeScheme.from_labels(labels)
        truth = scheme.group_of(out.labels.age_years[exact])
        pred = scheme.group_of(out.age_years[exact])
        row = {"years": {"age_exact": metrics.age_exact(pred, truth), "age_one_off": metrics.age_one_off(pred, truth), "n": int(exact.sum())}}
        if labels == tuple(meta.age_labels):
            head = out.age_probs.argmax(1)[exact]
            row["head"] = {"age_exact": metrics.age_exact(head, truth), "age_one_off": metrics.age_one_off(head, truth), "n": int(exact.sum())}
        result[scheme_name(labels)] = row
    return result


def model_size(model: Path | None, meta: ModelMeta) -> dict | None:
    """Parameter count and forward FLOPs at (1, 3, S, S) of the PyTorch model (for an
    .onnx file only the architecture from its meta is counted, untrained); None
    without torch (the runtime install), where they are not counted."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("timm") is None:
        log.info("model size not counted: needs torch and timm (pip install 'realtime[train]')")
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engines.model import create_model, default_model, load_checkpoint

    if model is None:
        net = default_model()
    elif model.suffix == ".safetensors":
        net = load_checkpoint(model)
    else:
        net = create_model(meta=meta).eval()
    x = torch.zeros(1, 3, meta.input_size, meta.input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return {
        "arch": meta.arch,
        "input_size": meta.input_size,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "flops": int(counter.get_total_flops()),
    }


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _by_gender(result: dict) -> list[str]:
    """One line of gender accuracy per true gender and their mean (balanced), when
    every gender is present."""
    rows, balanced = result.get("by_gender") or {}, result["overall"].get("gender_balanced")
    if balanced is None:
        return []
    parts = [f"{name} {_pct(row['gender_acc'])} ({row['n']})" for name, row in rows.items()]
    return [f"gender by true gender: {', '.join(parts)}; balanced {_pct(balanced)}"]


def _scored(result: dict) -> str:
    """What was scored: the model alone, or the app's answer with faceres' second opinion."""
    so = result.get("second_opinion")
    if not so:
        return "scored: the model alone"
    alone = so["faceres_alone"]
    parts = [f"{name} {_pct(alone[key])}" for name, key in (("gender", "gender_acc"), ("balanced", "gender_balanced"),
                                                               ("age exact", "age_exact")) if alone.get(key) is not None]
    return (f"scored: the app's answer with faceres' second opinion (gender on {100 * so['gender_fused']:.1f}% of the faces, "
            f"age on all; faceres alone: {', '.join(parts)}); --no-second-opinion: the model alone")


def format_metrics(result: dict) -> str:
    """A few lines for the terminal."""
    o, ci = result["overall"], result.get("ci95", {})

    def pct(key):
        v = o.get(key)
        if v is None:
            return "n/a"
        lo, hi = ci.get(key, (None, None)) or (None, None)
        return f"{100 * v:.1f}%" + (f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else "")

    mae = o.get("mae")
    lines = [
        f"{result['images']} images ({result['skipped']} skipped, {result['no_face']} without a detected face), backend {result['backend']}",
        _scored(result),
        f"age group exact {pct('age_exact')}, 1-off {pct('age_one_off')}",
        f"gender {pct('gender_acc')}, ages 13+ {pct('gender_acc_13plus')}",
        *_by_gender(result),
        f"age MAE {'n/a' if mae is None or not math.isfinite(mae) else f'{mae:.2f} years'}",
    ]
    for name, row in (result.get("by_scheme") or {}).items():
        parts = [f"{how} exact {100 * r['age_exact']:.1f}%, 1-off {100 * r['age_one_off']:.1f}%"
                 for how, r in row.items() if r.get("age_exact") is not None]
        if parts:
            lines.append(f"age scheme {name}: " + "; ".join(parts))
    cal = result.get("calibration")
    if cal:
        before, after = cal["ece_before"], cal["ece_after"]
        lines.append(f"calibration error (ECE) gender {_pct(before['gender'])} -> {_pct(after['gender'])}, "
                     f"age {_pct(before['age'])} -> {_pct(after['age'])} (temperatures {cal['temperature']['gender']:g}, {cal['temperature']['age']:g})")
        shown = cal["gender_shown"]
        if cal["min_gender_confidence"] and shown["shown"] is not None:
            lines.append(f"genders shown at p >= {cal['min_gender_confidence']:.3f}: {100 * shown['shown']:.1f}%, "
                         f"right {_pct(shown['accuracy_shown'])}")
    size = result["model_size"]
    if size is not None:
        lines.append(f"{size['arch']} at {size['input_size']} px: {size['parameters'] / 1e6:.2f} M parameters, {size['flops'] / 1e6:.0f} MFLOPs")
    return "\n".join(lines)
