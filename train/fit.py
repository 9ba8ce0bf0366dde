"""Training: one fold (:func:`fit`) and k-fold cross-validation (:func:`cross_validate`).

Per fold, under ``<out>/fold_<k>/``:
    epochs.csv         one row per epoch (losses, metrics, learning rate, seconds)
    last.pt            resume state after each epoch (model, optimizer, history; weights_only)
    best.safetensors   the epoch with the lowest validation loss (save_checkpoint format)
    final.safetensors  the last epoch
    result.json        final-epoch validation metrics and confusion matrices
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from engines.model import save_checkpoint
from engines.writes import check_distinct, json_text, write_atomic
from realtime.crops import Cropper
from realtime.errors import RealtimeError
from train import metrics
from train.augment import Augmenter
from engines.meta import AGE_LABELS
from train.ages import AgeScheme, relabel
from train.data import LabelledSet, Rows, assign_folds, holdout_mask, read_images
from train.formats import load_sets
from train.losses import FeatureMatch, MaskedLoss, Teachers, class_weights
from train.resume import check_weights, load_state, save_state
from train.sampling import BalancedSampler, balance_weights
from train.teach import FEATURE_DIM, TeacherCache
from train.trainer import (
    LOG_COLUMNS,
    AppInputs,
    FaceTrainSet,
    ProgressFactory,
    TrainSettings,
    _null_progress,
    build_net,
    evaluate_logits,
    init_weights,
    lr_at,
    predict,
    seed_everything,
    setup_distributed,
    to_input,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- one fold
@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    age_confusion: list[list[int]]
    gender_confusion: list[list[int]]
    folder: Path

    def to_json(self) -> dict:
        d = asdict(self)
        d["folder"] = str(self.folder)
        return metrics.clean(d)


def fit(
    settings: TrainSettings,
    train_images: np.ndarray | Rows,
    train_labels: LabelledSet,
    val_images: np.ndarray,
    val_labels: LabelledSet,
    folder: Path,
    fold: int = 0,
    progress: ProgressFactory = _null_progress,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> FoldResult:
    """Train one model on ``train_*`` and validate on ``val_*`` after every epoch.

    Images are BGR uint8 (N, H, W, 3), each one face taken whole (training images may
    be :class:`train.data.Rows` of the whole set's array, not a copy). Returns the final
    epoch's validation metrics (through the app's preprocessing) and history."""
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ddp = setup_distributed(device.type)
    if device.type == "cuda" and settings.device is None:
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    seed_everything(settings.seed + fold)
    meta = settings.meta()
    folder.mkdir(parents=True, exist_ok=True)

    net = build_net(meta, settings.pretrained, settings.drop_rate)
    if settings.init is not None:
        init_weights(net, settings.init, settings.init_member)
    net = net.to(device).to(memory_format=torch.channels_last)
    cache = TeacherCache(settings.teacher_cache, meta.age_labels, meta.gender_labels) if settings.teacher_cache else None
    feature = FeatureMatch(net.age_head.in_features, FEATURE_DIM).to(device) if settings.feature_weight > 0 else None
    run = _Run(
        settings, fold, device, ddp, net,
        model=nn.parallel.DistributedDataParallel(net) if ddp.world > 1 else net,
        teachers=Teachers(settings.teachers, meta).to(device) if settings.teachers and settings.distill > 0 else None,
        loss_fn=_loss(settings, train_labels, meta).to(device),
        optimizer=_optimizer(net, settings, feature),
        use_amp=settings.amp and device.type == "cuda",
        cropper=Cropper(meta),
        cache=cache,
        cache_rows=None if cache is None else torch.from_numpy(cache.rows(train_labels.content_keys())),
        feature=feature,
    )
    if cache is not None and settings.calibrate_teachers:
        for r in cache.calibrate_gender(run.cache_rows.numpy(), train_labels.gender, train_labels.source):
            log.info("teacher %s on set %d: gender re-centred (a %.3f, b %.3f), balanced on the training faces %s -> %s",
                     r["teacher"], r["set"], r["a"], r["b"], r["balanced_before"], r["balanced_after"])
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.use_amp)
    dataset = FaceTrainSet(train_images, train_labels, Augmenter(meta.input_size, settings.augment), settings.seed + fold)
    loader, sampler, generator = _loader(dataset, settings, ddp, device, fold)
    val_inputs = AppInputs(val_images, meta) if ddp.main else None
    val_loss_fn = copy.deepcopy(run.loss_fn).cpu()

    state_path = folder / "last.pt"
    start_epoch, history, best = load_state(state_path, run, generator) if settings.resume and state_path.exists() else (0, [], math.inf)
    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        dataset.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        row = run.train_epoch(loader, epoch, progress)
        check_weights(net, fold, epoch)
        if ddp.main:
            row.update(evaluate_logits(predict(net, val_inputs, device), val_labels, val_loss_fn))
            row["seconds"] = time.perf_counter() - t0
            history.append({k: row.get(k, math.nan) for k in LOG_COLUMNS})
            if row.get("val_loss", math.inf) < best:
                best = row["val_loss"]
                save_checkpoint(net, folder / "best.safetensors", meta)
            save_checkpoint(net, folder / "final.safetensors", meta)
            _write_log(folder / "epochs.csv", history)
            save_state(state_path, run, epoch, history, best, generator)
            log.info(
                "fold %d epoch %d: loss %.3f/%.3f age %.3f (1-off %.3f) gender %.3f MAE %.2f (%.0f s)",
                fold, epoch + 1, row["train_loss"], row.get("val_loss", math.nan), row.get("age_exact", math.nan),
                row.get("age_one_off", math.nan), row.get("gender_acc", math.nan), row.get("mae", math.nan), row["seconds"],
            )  # fmt: skip
            if on_epoch is not None:
                on_epoch(fold, history[-1])
        if ddp.world > 1:
            dist.barrier()

    if not ddp.main:
        return FoldResult(fold, {}, history, [], [], folder)
    return _fold_result(fold, history, predict(net, val_inputs, device), val_labels, folder, meta)


@dataclass
class _Run:
    """What one fold's epochs share: the network and its optimiser, losses and device."""

    settings: TrainSettings
    fold: int
    device: torch.device
    ddp: object
    net: nn.Module
    model: nn.Module
    teachers: Teachers | None
    loss_fn: MaskedLoss
    optimizer: torch.optim.Optimizer
    use_amp: bool
    cropper: Cropper
    cache: TeacherCache | None = None
    cache_rows: torch.Tensor | None = None  # (N,) int64 cache row of each training image
    feature: FeatureMatch | None = None
    scaler: object = None

    def train_epoch(self, loader, epoch: int, progress: ProgressFactory) -> dict:
        """One pass over ``loader``: the epoch's training loss, accuracies and last lr."""
        s, device = self.settings, self.device
        self.model.train()
        steps_per_epoch = len(loader)
        total_steps = steps_per_epoch * s.epochs
        sums = torch.zeros(4, dtype=torch.float64)  # loss*n, age correct, gender correct, n
        counts = torch.zeros(2, dtype=torch.float64)  # known age, known gender
        with progress(steps_per_epoch, f"fold {self.fold} epoch {epoch + 1}/{s.epochs}") as bar:
            for step, (rgb, age_group, age_years, gender, index) in enumerate(loader):
                lr = lr_at(epoch * steps_per_epoch + step, total_steps, s.lr, s.warmup)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                x = to_input(rgb, self.cropper, device, channels_last=True)
                age_group, age_years, gender = age_group.to(device), age_years.to(device), gender.to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=self.use_amp):
                    outputs = self.model(x, years_logits=True, features=self.feature is not None)
                    soft, target = self._soft(x, index, age_group)
                    loss, _ = self.loss_fn(outputs, age_group, age_years, gender, soft, s.distill)
                    if self.feature is not None:
                        loss = loss + s.feature_weight * self.feature(outputs[-1], target)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise RealtimeError(f"fold {self.fold} epoch {epoch + 1} step {step + 1}: the training loss is {value}; "
                                        "the run diverged (try a lower --lr, or check --init and the labels)")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                with torch.no_grad():
                    n = len(x)
                    sums += torch.tensor([
                        value * n,
                        float(((outputs[0].argmax(1) == age_group) & (age_group >= 0)).sum()),
                        float(((outputs[1].argmax(1) == gender) & (gender >= 0)).sum()),
                        n,
                    ], dtype=torch.float64)  # fmt: skip
                    counts += torch.tensor([float((age_group >= 0).sum()), float((gender >= 0).sum())], dtype=torch.float64)
                bar.update(1)
        if self.ddp.world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        return {
            "epoch": epoch + 1,
            "train_loss": float(sums[0] / max(1, sums[3])),
            "train_age_exact": float(sums[1] / counts[0]) if counts[0] else math.nan,
            "train_gender_acc": float(sums[2] / counts[1]) if counts[1] else math.nan,
            "lr": lr,
        }


    def _soft(self, x: torch.Tensor, index: torch.Tensor, age_group: torch.Tensor):
        """The batch's soft targets ``(age (N, A), gender (N, G), years (N,))`` or None,
        and the teacher's feature (N, 1024) or None: from the cache, or the teacher
        models run on ``x``."""
        if self.cache is None:
            return (self.teachers(x) if self.teachers is not None else None), None
        age, gender, years, feature = self.cache.soft(self.cache_rows[index].numpy(), (age_group >= 0).cpu().numpy())
        return tuple(torch.from_numpy(a).to(self.device) for a in (age, gender, years)), torch.from_numpy(feature).to(self.device)


def _loss(settings: TrainSettings, labels: LabelledSet, meta) -> MaskedLoss:
    """The heads' loss of a run (class weights from ``labels`` when asked)."""
    weights = [class_weights(k, n) if settings.class_weights else None
               for k, n in ((labels.age_group, len(meta.age_labels)), (labels.gender, len(meta.gender_labels)))]
    return MaskedLoss(*weights, settings.label_smoothing, settings.years_weight)


def _optimizer(net: nn.Module, settings: TrainSettings, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW, weight decay on the weights only (not on biases and norms); ``extra``:
    modules trained with the network but not part of it (a feature projection)."""
    params = list(net.named_parameters()) + (list(extra.named_parameters()) if extra is not None else [])
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )


def _loader(dataset: FaceTrainSet, settings: TrainSettings, ddp, device: torch.device, fold: int):
    """(loader, its sampler (balanced or distributed) or None, the shuffling generator)."""
    if settings.balanced:
        sampler = BalancedSampler(balance_weights(dataset.labels, settings.balance_race), settings.seed + fold, ddp.rank, ddp.world)
    elif ddp.world > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, ddp.world, ddp.rank, shuffle=True, seed=settings.seed + fold)
    else:
        sampler = None
    generator = torch.Generator().manual_seed(settings.seed + fold)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        num_workers=settings.workers,
        drop_last=len(dataset) // ddp.world > settings.batch_size,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    return loader, sampler, generator


def _fold_result(fold: int, history: list, outputs, val_labels: LabelledSet, folder: Path, meta) -> FoldResult:
    """The final epoch's validation metrics and confusion matrices, also as result.json."""
    age_logits, gender_logits, _ = outputs
    result = FoldResult(
        fold,
        evaluate_logits(outputs, val_labels),
        history,
        metrics.confusion(age_logits.argmax(1), val_labels.age_group, len(meta.age_labels)).tolist(),
        metrics.confusion(gender_logits.argmax(1), val_labels.gender, len(meta.gender_labels)).tolist(),
        folder,
    )
    write_atomic(folder / "result.json", json_text(result.to_json(), indent=2), "--out")
    return result


def _write_log(path: Path, history: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


# ----------------------------------------------------------------------------- k folds
def cross_validate(
    settings: TrainSettings,
    progress: ProgressFactory = _null_progress,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train every fold (or one held-out run for ``folds == 1``) and write the summary,
    confusion matrices and plots to ``settings.out``. Returns the summary dict."""
    from train import report

    if settings.threads:
        torch.set_num_threads(settings.threads)
    data = load_sets(settings.sets)
    if settings.limit:
        data = data[_first_of_each(data, settings.limit)]
    if settings.age_labels != AGE_LABELS:
        data.age_group = relabel(data.age_group, data.age_years, AgeScheme.from_labels(settings.age_labels))
    check_distinct([*settings.inputs(), *data.files], settings.outputs())
    with progress(len(data), "reading images") as bar:
        data, images = read_images(data, settings.image_side, bar.update, settings.crop_scale)
    splits = _splits(data, settings)
    _check_splits(splits, settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    ddp_main = int(os.environ.get("RANK", "0")) == 0
    if ddp_main:
        write_atomic(settings.out / "settings.json", json_text(metrics.clean(_jsonable(asdict(settings))), indent=2), "--out")
    results = []
    for fold, val_mask in splits:
        folder = settings.out / f"fold_{fold}"
        done = folder / "result.json"
        listed = not settings.only_folds or fold in settings.only_folds
        if (settings.resume or not listed) and done.exists():
            log.info("fold %d: already finished (%s)", fold, done)
            results.append(json.loads(done.read_text()))
            continue
        if not listed:
            log.info("fold %d: not among --fold %s and not finished in %s; left out of the summary", fold, list(settings.only_folds), settings.out)
            continue
        log.info("fold %d: %d training, %d validation images", fold, int((~val_mask).sum()), int(val_mask.sum()))
        train_rows = Rows(images, np.flatnonzero(~val_mask))
        result = fit(settings, train_rows, data[~val_mask], images[val_mask], data[val_mask], folder, fold, progress, on_epoch)
        results.append(result.to_json())
    if not ddp_main:
        return {}
    summary = report.write_summary(results, settings.out, settings.meta(), data_description=data.describe())
    if settings.save is not None:
        final = Path(results[-1]["folder"]) / "final.safetensors"
        from engines.model import load_checkpoint

        save_checkpoint(load_checkpoint(final), settings.save, half=True)
        summary["saved"] = str(settings.save)
        log.info("wrote %s (float16) from %s", settings.save, final)
    return summary


def _first_of_each(data: LabelledSet, limit: int) -> np.ndarray:
    """Indices of the first ``limit`` images of each set (``--limit``, quick checks)."""
    return np.concatenate([np.flatnonzero(data.source == k)[:limit] for k in np.unique(data.source)])


def _splits(data: LabelledSet, settings: TrainSettings) -> list[tuple[int, np.ndarray]]:
    official = bool(len(data)) and bool((data.folds >= 0).all())
    if settings.folds == 1:
        if official:
            log.info("single run on data with official folds: validating on official fold %d", int(data.folds.min()))
            return [(0, data.folds == data.folds.min())]
        return [(0, holdout_mask(data, settings.holdout))]
    fold_of = assign_folds(data, settings.folds)
    folds = np.unique(fold_of)[: settings.folds]
    if len(folds) < settings.folds:
        raise RealtimeError(f"{', '.join(str(d) for d, _ in settings.sets)}: only {len(folds)} folds have images; use fewer --folds or more data")
    return [(int(k), fold_of == k) for k in folds]


def _check_splits(splits: list[tuple[int, np.ndarray]], settings: TrainSettings) -> None:
    """Every split trains on something and validates on something (before any work:
    an empty validation side would give NaN metrics and a model nobody scored)."""
    for fold, val_mask in splits:
        n_val = int(val_mask.sum())
        if n_val == 0 or n_val == len(val_mask):
            fix = "a larger or smaller --holdout" if settings.folds == 1 else "fewer --folds"
            raise RealtimeError(f"{settings.data}: fold {fold} has {len(val_mask) - n_val} training and {n_val} validation images; "
                                f"use more images (--limit?) or {fix}")


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, Path):
        return str(d)
    if isinstance(d, (tuple, list)):
        return [_jsonable(v) for v in d]
    return d
