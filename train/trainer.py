"""Training: one fold (:func:`fit`) and k-fold cross-validation (:func:`cross_validate`).

Runs on CPU, one GPU, or several GPUs/machines under ``torchrun`` (DistributedDataParallel
with a DistributedSampler; NCCL on CUDA, gloo on CPU). Rank 0 validates, logs and writes
checkpoints; every rank reads the data.

Per fold, under ``<out>/fold_<k>/``:
    epochs.csv         one row per epoch (losses, metrics, learning rate, seconds)
    last.pt            resume state after each epoch (model, optimizer, history; weights_only)
    best.safetensors   the epoch with the lowest validation loss (save_checkpoint format)
    final.safetensors  the last epoch
    result.json        final-epoch validation metrics and confusion matrices
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from engines.limits import check_fields
from engines.meta import ModelMeta
from engines.model import AgeGenderNet, Ensemble, create_model, load_checkpoint, mean_outputs, read_meta, save_checkpoint
from realtime.crops import Cropper
from realtime.errors import RealtimeError
from train import metrics
from train.augment import Augmenter, AugmentSettings
from engines.writes import check_distinct, check_outputs, json_text, write_atomic
from train.data import LabelledSet, assign_folds, holdout_mask, label_files, load_dataset, read_images

log = logging.getLogger(__name__)

#: ``progress(total, description)`` -> a context manager with ``update(n)`` (tqdm fits).
ProgressFactory = Callable[[int, str], ContextManager]
LOG_COLUMNS = (
    "epoch", "train_loss", "train_age_exact", "train_gender_acc", "val_loss", "age_exact", "age_one_off",
    "gender_acc", "gender_acc_13plus", "mae", "lr", "seconds",
)  # fmt: skip


@dataclass
class TrainSettings:
    """Everything one training run needs.

    Attributes:
        data, format: the labelled set and its layout (``adience``, ``utkface``, ``csv``).
        out: directory for fold folders, summary and plots.
        arch: any timm model name; input_size, crop_scale: go into the model's meta.
        folds: k >= 2 trains k folds (Adience: its official folds); 1 trains one model
            validated on ``holdout`` (share of the images; Adience: official fold 0).
        epochs, batch_size, lr (peak), weight_decay, warmup (share of steps rising to
            the peak; then cosine to zero: a one-cycle schedule).
        label_smoothing, class_weights (inverse-frequency for both heads),
        years_weight (weight of the L1 years loss, in years), drop_rate (before heads).
        years_bins: 0 for a linear years head; N > 0 for a distribution over the ages
            0..N-1 trained towards a Gaussian around the true age (see ModelMeta).
        pretrained: start from timm's ImageNet weights (needs the internet or HF cache).
        augment: the training augmentation.
        seed: fixes initialisation, order and augmentation.
        workers: DataLoader worker processes (0: augment in the training process).
        resume: continue each fold from its ``last.pt``; finished folds are kept.
        device: "cpu", "cuda", "cuda:1"...; None picks CUDA when present.
        amp: mixed precision on CUDA (ignored on CPU).
        threads: torch CPU threads (None: torch's default).
        limit: use only the first N images (quick checks).
        image_side: side the images are held in RAM at (None: their own size).
        trained_on: text for the model's meta (data and its terms).
        save: also write the last fold's final model here (float16), e.g. the default weights.
        only_folds: train only these folds of the k (empty: all of them), so the folds
            of one cross-validation can run at once in several processes or machines
            into the same ``out``; folds not listed count only once finished there.
        init: start from this checkpoint's weights (fine-tuning, e.g. the default model
            on your own data) instead of a random or ImageNet initialisation; its age
            and gender labels must be the run's.
        teachers: checkpoints to distil from: their averaged predictions on each
            augmented batch are soft targets (knowledge distillation), weighted
            ``distill`` (0-1) against the labels.
    """

    data: Path
    format: str = "utkface"
    out: Path = Path("runs/train")
    arch: str = "mobilenetv3_small_100"
    input_size: int = 112
    crop_scale: float = 1.15
    folds: int = 5
    holdout: float = 0.15
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    label_smoothing: float = 0.1
    class_weights: bool = False
    years_weight: float = 0.1
    years_bins: int = 0
    drop_rate: float = 0.2
    pretrained: bool = False
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    seed: int = 0
    workers: int = 0
    resume: bool = False
    device: str | None = None
    amp: bool = True
    threads: int | None = None
    limit: int | None = None
    image_side: int | None = None
    trained_on: str = ""
    save: Path | None = None
    only_folds: tuple[int, ...] = ()
    init: Path | None = None
    teachers: tuple[Path, ...] = ()
    distill: float = 0.5

    def __post_init__(self) -> None:
        check_fields(self)  # the one table of limits: before anything is read
        self.meta()  # a meta no reader would take fails now, not at the end of training
        self.data, self.out = Path(self.data), Path(self.out)
        self.init = None if self.init is None else Path(self.init)
        self.teachers = tuple(Path(t) for t in self.teachers)
        if self.years_bins < 0 or self.years_bins == 1:
            raise RealtimeError(f"--years-bins must be 0 (a linear head) or at least 2, got {self.years_bins}")
        for option, path in [("--init", self.init)] + [("--teacher", t) for t in self.teachers]:
            if path is not None:
                try:
                    read_meta(path)  # fail before the data is read, not an epoch later
                except RealtimeError as e:
                    raise RealtimeError(f"{option}: {e}") from None
        self.only_folds = tuple(sorted(set(self.only_folds)))
        if self.only_folds and not (self.folds >= 2 and all(0 <= k < self.folds for k in self.only_folds)):
            raise RealtimeError(f"--fold takes fold numbers 0 to {self.folds - 1} of a k-fold run (--folds 2 or more), got {list(self.only_folds)}")
        if self.save is not None:
            self.save = Path(self.save)
            if self.save.suffix != ".safetensors":
                raise RealtimeError(f"--save {self.save}: a model is written as a .safetensors file")
        check_outputs(self.inputs(), [("--save", self.save)])
        check_distinct(self.inputs(), self.outputs())

    def inputs(self) -> list[Path]:
        """The files a run reads (besides the images): labels, --init, --teacher."""
        return [*label_files(self.data), *([self.init] if self.init else []), *self.teachers]

    def outputs(self) -> list[tuple[str, Path]]:
        """Every file a run writes: --save and those under ``out`` (none may be an input)."""
        names = ("last.pt", "best.safetensors", "final.safetensors", "epochs.csv", "result.json")
        files = [("--save", self.save)] if self.save is not None else []
        files += [("--out", self.out / n) for n in ("settings.json", "summary.json", "summary.md")]
        return files + [("--out", self.out / f"fold_{k}" / n) for k in range(self.folds) for n in names]

    def meta(self) -> ModelMeta:
        return ModelMeta(
            arch=self.arch,
            input_size=self.input_size,
            crop_scale=self.crop_scale,
            years_bins=self.years_bins,
            trained=True,
            trained_on=self.trained_on or f"{self.format} data at {self.data}",
        )


# ----------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Dist:
    """Where this process sits in a torchrun job (world 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> Dist:
    """Join the process group torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, peak: float, warmup: float) -> float:
    """One-cycle learning rate: linear rise over ``warmup`` of the steps, cosine to 0."""
    rise = max(1, round(total * warmup))
    if step < rise:
        return peak * (0.04 + 0.96 * step / rise)
    t = (step - rise) / max(1, total - rise)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _null_progress(total: int, desc: str) -> ContextManager:
    return _NullBar()


class _NullBar(contextlib.AbstractContextManager):
    def update(self, n: int = 1) -> None:
        pass

    def __exit__(self, *exc) -> None:
        return None


class FaceTrainSet(torch.utils.data.Dataset):
    """Preloaded BGR images -> augmented RGB uint8 crops and their labels.

    Each item's randomness comes from ``(seed, epoch, index)``, so a run is the same
    whatever the worker count, and a resumed epoch repeats exactly."""

    def __init__(self, images: np.ndarray, labels: LabelledSet, augmenter: Augmenter, seed: int):
        self.images, self.labels, self.augmenter, self.seed = images, labels, augmenter, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, self.epoch, i))
        lab = self.labels
        return (
            self.augmenter(self.images[i], rng),
            lab.age_group[i],
            lab.age_years[i],
            lab.gender[i],
        )


def to_input(rgb: torch.Tensor, cropper: Cropper, device: torch.device, channels_last: bool) -> torch.Tensor:
    """RGB uint8 (N, S, S, 3) -> normalised float32 (N, 3, S, S) on ``device``, as
    ``Cropper.normalize`` does it."""
    x = rgb.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.as_tensor(cropper.mean, device=device).view(1, 3, 1, 1)
    inv_std = torch.as_tensor(cropper.inv_std, device=device).view(1, 3, 1, 1)
    x = (x - mean) * inv_std
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


#: Spread (years) of the Gaussian a distribution years head learns around each true age.
AGE_SIGMA = 2.0


def age_distribution(years: torch.Tensor, bins: int, sigma: float = AGE_SIGMA) -> torch.Tensor:
    """Ages (N,) float -> (N, bins) float32 rows summing to 1: a Gaussian over the whole
    ages 0..bins-1 centred on each age (clamped into that range)."""
    ages = torch.arange(bins, dtype=torch.float32, device=years.device)
    centre = years.float().clamp(0, bins - 1)[:, None]
    return torch.softmax(-0.5 * ((ages - centre) / sigma) ** 2, dim=1)


class MaskedLoss(nn.Module):
    """Sum of the three heads' losses, each over the samples whose label is known.

    Age group and gender: cross-entropy (optional class weights, label smoothing),
    unknown labels (-1) masked out. Years: L1 in years times ``years_weight``, only
    where the exact age is known (not NaN); a distribution head (``outputs`` carries its
    logits (N, bins) as a fourth item) adds the KL divergence from a Gaussian of
    ``AGE_SIGMA`` years around the true age to its softmax (DLDL). A head with no known
    label in the batch adds ``0 * logits.sum()`` so every parameter still gets a gradient
    (DDP needs it).
    """

    def __init__(self, age_weight: torch.Tensor | None = None, gender_weight: torch.Tensor | None = None,
                 label_smoothing: float = 0.0, years_weight: float = 0.1):  # fmt: skip
        super().__init__()
        self.register_buffer("age_weight", age_weight)
        self.register_buffer("gender_weight", gender_weight)
        self.label_smoothing = label_smoothing
        self.years_weight = years_weight

    def forward(self, outputs, age_group, age_years, gender, soft=None, distill: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """``soft``: the teachers' ``(age_probs (N, A), gender_probs (N, G), years (N,))``
        for this batch (see :class:`Teachers`); each head's loss is then
        ``(1 - distill) * loss on the labels + distill * loss on the teachers' outputs``,
        the latter over every sample, labelled or not."""
        age_logits, gender_logits, years, *rest = outputs
        years_logits = rest[0] if rest else None
        parts = {
            "age": self._ce(age_logits, age_group, self.age_weight),
            "gender": self._ce(gender_logits, gender, self.gender_weight),
        }
        known = torch.isfinite(age_years)
        parts["years"] = (
            self.years_weight * F.l1_loss(years[known].float(), age_years[known])
            if known.any()
            else 0.0 * years.sum()
        )
        if years_logits is not None:
            parts["years"] = parts["years"] + (
                F.kl_div(years_logits[known].float().log_softmax(1), age_distribution(age_years[known], years_logits.shape[1]), reduction="batchmean")
                if known.any()
                else 0.0 * years_logits.sum()
            )
        if soft is not None and distill > 0:
            taught = {
                "age": F.cross_entropy(age_logits.float(), soft[0].float()),
                "gender": F.cross_entropy(gender_logits.float(), soft[1].float()),
                "years": self.years_weight * F.l1_loss(years.float(), soft[2].float()),
            }
            parts = {k: (1 - distill) * parts[k] + distill * taught[k] for k in parts}
        total = parts["age"] + parts["gender"] + parts["years"]
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _ce(self, logits, target, weight) -> torch.Tensor:
        known = target >= 0
        if not known.any():
            return 0.0 * logits.sum()
        return F.cross_entropy(logits[known].float(), target[known], weight=weight, label_smoothing=self.label_smoothing)


class Teachers(nn.Module):
    """Frozen trained models whose averaged outputs are a student's soft targets.

    Called on the student's normalised batch (N, 3, S, S) float32, each teacher at its
    own input size (resized when it differs); returns ``(age_probs (N, A), gender_probs
    (N, G), years (N,))`` float32, the mean over teachers."""

    def __init__(self, paths: tuple[Path, ...], meta: ModelMeta):
        super().__init__()
        nets = []
        for path in paths:
            net = load_checkpoint(path)
            theirs = net.meta
            if (theirs.age_labels, theirs.gender_labels, theirs.mean, theirs.std) != (meta.age_labels, meta.gender_labels, meta.mean, meta.std):
                raise RealtimeError(f"--teacher {path}: its labels or input normalisation differ from the model being trained")
            nets.append(net.requires_grad_(False).to(memory_format=torch.channels_last))
        self.nets = nn.ModuleList(nets).eval()

    def train(self, mode: bool = True) -> "Teachers":
        return super().train(False)  # always in eval mode (batch norm statistics, no dropout)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = []
        for net in self.nets:
            side = net.meta.input_size
            xi = x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
            outs.append(tuple(t.float() for t in net.probabilities(xi)))
        return mean_outputs(outs)


def init_weights(net: AgeGenderNet, path: Path) -> None:
    """Copy a checkpoint's weights into ``net`` (fine-tuning); same architecture and
    labels. A years head of another kind (``years_bins``) is left as initialised; an
    ensemble gives its first member."""
    source = load_checkpoint(path)
    if isinstance(source, Ensemble):  # e.g. the default model: fine-tune its first member
        log.info("%s is an ensemble of %d networks: starting from its first", path, len(source.members))
        source = source.members[0]
    if (source.meta.arch, source.meta.age_labels, source.meta.gender_labels) != (net.meta.arch, net.meta.age_labels, net.meta.gender_labels):
        raise RealtimeError(
            f"--init {path}: its architecture ({source.meta.arch}) or age/gender labels differ from the run's "
            f"({net.meta.arch}); pass --arch {source.meta.arch}"
        )
    state = source.state_dict()
    same_head = source.meta.years_bins == net.meta.years_bins
    if not same_head:
        state = {k: v for k, v in state.items() if not k.startswith("years_head.")}
        log.info("the years head starts afresh (%d bins in %s, %d here)", source.meta.years_bins, path, net.meta.years_bins)
    net.load_state_dict(state, strict=same_head)
    log.info("starting from the weights of %s", path)


def class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes) from (N,) int labels, -1 ignored."""
    counts = np.bincount(labels[labels >= 0], minlength=classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def build_net(meta: ModelMeta, pretrained: bool = False, drop_rate: float = 0.2) -> AgeGenderNet:
    """The network for ``meta``; ``pretrained`` loads timm's ImageNet weights for the
    backbone and fails fast, with a RealtimeError, when they cannot be had."""
    if not pretrained:
        return create_model(meta=meta, drop_rate=drop_rate)
    try:
        return create_model(meta=meta, pretrained=True, drop_rate=drop_rate)
    except RealtimeError:
        raise
    except Exception as e:  # hub/network errors come in many types (OSError, HTTP, LocalEntryNotFound)
        raise RealtimeError(
            f"--pretrained: cannot get timm's weights for {meta.arch!r} (offline? {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); connect to the internet or train without --pretrained"
        ) from None


# ----------------------------------------------------------------------------- predict
@torch.no_grad()
def predict(net: nn.Module, inputs: np.ndarray, device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised inputs (N, 3, S, S) float32 -> (age_logits (N, A), gender_logits (N, G), years (N,)) float32."""
    was_training = net.training
    net.eval()
    outs = [[], [], []]
    for start in range(0, len(inputs), batch_size):
        x = torch.from_numpy(inputs[start : start + batch_size]).to(device)
        for store, o in zip(outs, net(x.contiguous(memory_format=torch.channels_last))):
            store.append(o.float().cpu().numpy())
    net.train(was_training)
    n_age = len(getattr(net, "meta", ModelMeta()).age_labels)
    if not outs[0]:
        return np.zeros((0, n_age), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    return tuple(np.concatenate(o) for o in outs)


def app_inputs(images: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """BGR uint8 images (N, H, W, 3), each one whole face crop -> (N, 3, S, S) float32
    through the app's own preprocessing (``Cropper.crop_whole``)."""
    cropper = Cropper(meta)
    if not len(images):
        s = meta.input_size
        return np.zeros((0, 3, s, s), np.float32)
    return np.concatenate([cropper.crop_whole(im) for im in images])


def evaluate_logits(outputs, labels: LabelledSet, loss_fn: MaskedLoss | None = None) -> dict[str, float]:
    age_logits, gender_logits, years = outputs
    row = metrics.summary(age_logits.argmax(1), labels.age_group, gender_logits.argmax(1), labels.gender, years, labels.age_years)
    if loss_fn is not None and len(labels):
        with torch.no_grad():
            loss, _ = loss_fn(
                tuple(torch.from_numpy(o) for o in outputs),
                torch.from_numpy(labels.age_group),
                torch.from_numpy(labels.age_years),
                torch.from_numpy(labels.gender),
            )
        row["val_loss"] = float(loss)
    return row


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
    train_images: np.ndarray,
    train_labels: LabelledSet,
    val_images: np.ndarray,
    val_labels: LabelledSet,
    folder: Path,
    fold: int = 0,
    progress: ProgressFactory = _null_progress,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> FoldResult:
    """Train one model on ``train_*`` and validate on ``val_*`` after every epoch.

    Images are BGR uint8 (N, H, W, 3), each one face taken whole. Returns the final
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
        init_weights(net, settings.init)
    net = net.to(device).to(memory_format=torch.channels_last)
    teachers = Teachers(settings.teachers, meta).to(device) if settings.teachers and settings.distill > 0 else None
    model: nn.Module = nn.parallel.DistributedDataParallel(net) if ddp.world > 1 else net

    n_age, n_gender = len(meta.age_labels), len(meta.gender_labels)
    loss_fn = MaskedLoss(
        class_weights(train_labels.age_group, n_age) if settings.class_weights else None,
        class_weights(train_labels.gender, n_gender) if settings.class_weights else None,
        settings.label_smoothing,
        settings.years_weight,
    ).to(device)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    use_amp = settings.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    dataset = FaceTrainSet(train_images, train_labels, Augmenter(meta.input_size, settings.augment), settings.seed + fold)
    sampler = (
        torch.utils.data.DistributedSampler(dataset, ddp.world, ddp.rank, shuffle=True, seed=settings.seed + fold)
        if ddp.world > 1
        else None
    )
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
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * settings.epochs
    cropper = Cropper(meta)
    val_inputs = app_inputs(val_images, meta) if ddp.main else None
    val_loss_fn = copy.deepcopy(loss_fn).cpu()

    start_epoch, history, best = 0, [], math.inf
    state_path = folder / "last.pt"
    if settings.resume and state_path.exists():
        try:  # weights_only: tensors and plain data, never a user's code
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, history, best = int(state["epoch"]), list(state["history"]), float(state["best"])
            torch.set_rng_state(state["torch_rng"])
            generator.set_state(state["loader_rng"])
        except Exception:  # noqa: BLE001 - unpickling, a missing key, shapes of another run: one answer
            raise RealtimeError(f"--resume: {state_path} is not the resume state of this run (another run's settings, "
                                "or not written by realtime train); delete it, or train without --resume") from None
        log.info("fold %d: resumed from %s after epoch %d", fold, state_path, start_epoch)

    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        model.train()
        dataset.epoch = epoch
        if sampler is not None:
            sampler.set_epoch(epoch)
        sums = torch.zeros(4, dtype=torch.float64)  # loss*n, age correct, gender correct, n
        counts = torch.zeros(2, dtype=torch.float64)  # known age, known gender
        with progress(steps_per_epoch, f"fold {fold} epoch {epoch + 1}/{settings.epochs}") as bar:
            for step, (rgb, age_group, age_years, gender) in enumerate(loader):
                lr = lr_at(epoch * steps_per_epoch + step, total_steps, settings.lr, settings.warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = to_input(rgb, cropper, device, channels_last=True)
                age_group, age_years, gender = age_group.to(device), age_years.to(device), gender.to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    outputs = model(x, years_logits=True)
                    soft = teachers(x) if teachers is not None else None
                    loss, _ = loss_fn(outputs, age_group, age_years, gender, soft, settings.distill)
                value = float(loss)
                if not math.isfinite(value):
                    raise RealtimeError(f"fold {fold} epoch {epoch + 1} step {step + 1}: the training loss is {value}; "
                                        "the run diverged (try a lower --lr, or check --init and the labels)")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
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
        if ddp.world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        row = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0] / max(1, sums[3])),
            "train_age_exact": float(sums[1] / counts[0]) if counts[0] else math.nan,
            "train_gender_acc": float(sums[2] / counts[1]) if counts[1] else math.nan,
            "lr": lr,
        }
        broken = [name for name, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if broken:
            raise RealtimeError(f"fold {fold} epoch {epoch + 1}: {len(broken)} weight tensors became NaN or infinite "
                                f"(e.g. {broken[0]}); nothing of this epoch is saved (try a lower --lr or --weight-decay)")
        if ddp.main:
            row.update(evaluate_logits(predict(net, val_inputs, device), val_labels, val_loss_fn))
            row["seconds"] = time.perf_counter() - t0
            history.append({k: row.get(k, math.nan) for k in LOG_COLUMNS})
            if row.get("val_loss", math.inf) < best:
                best = row["val_loss"]
                save_checkpoint(net, folder / "best.safetensors", meta)
            save_checkpoint(net, folder / "final.safetensors", meta)
            _write_log(folder / "epochs.csv", history)
            tmp = state_path.with_suffix(".tmp")
            torch.save(
                {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "torch_rng": torch.get_rng_state(),
                    "loader_rng": generator.get_state(),
                },
                tmp,
            )
            tmp.replace(state_path)
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
    age_logits, gender_logits, years = outputs = predict(net, val_inputs, device)
    final = evaluate_logits(outputs, val_labels)
    result = FoldResult(
        fold,
        final,
        history,
        metrics.confusion(age_logits.argmax(1), val_labels.age_group, n_age).tolist(),
        metrics.confusion(gender_logits.argmax(1), val_labels.gender, n_gender).tolist(),
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
    data = load_dataset(settings.data, settings.format)
    if settings.limit:
        data = data[np.arange(min(settings.limit, len(data)))]
    check_distinct([*settings.inputs(), *data.files], settings.outputs())
    with progress(len(data), "reading images") as bar:
        data, images = read_images(data, settings.image_side, bar.update)
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
        result = fit(settings, images[~val_mask], data[~val_mask], images[val_mask], data[val_mask], folder, fold, progress, on_epoch)
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
        raise RealtimeError(f"{settings.data}: only {len(folds)} folds have images; use fewer --folds or more data")
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
