"""What training is made of: its settings, distributed set-up, the data set of augmented
crops, the network, prediction and validation metrics; the loop itself is
:mod:`train.fit`, the losses :mod:`train.losses`.

Runs on CPU, one GPU, or several GPUs/machines under ``torchrun`` (DistributedDataParallel
with a DistributedSampler; NCCL on CUDA, gloo on CPU). Rank 0 validates, logs and writes
checkpoints; every rank reads the data.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from engines.files import read_checkpoint_meta as read_meta
from engines.limits import check_fields
from engines.meta import ModelMeta
from engines.model import AgeGenderNet, Ensemble, create_model, load_checkpoint
from engines.writes import check_distinct, check_outputs
from realtime.crops import Cropper
from realtime.errors import RealtimeError
from train import metrics
from train.augment import Augmenter, AugmentSettings
from train.croprecord import training_level_eyes
from train.data import LabelledSet
from train.formats import label_files
from train.losses import MaskedLoss

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
        data, format: the labelled set and its layout (``adience``, ``utkface``, ``csv``);
            or several sets at once, paired in order (one format may stand for all):
            see :func:`train.formats.load_sets`. Labels a set lacks (LFW's ages) are
            masked out of their head's loss.
        age_groups: the age head's scheme, ``adience`` (default), ``5y`` or lower
            bounds ``B1,B2,...`` (:mod:`train.ages`); it becomes the model's age labels.
        balance: draw training images with a weighted sampler so that, within each
            set, genders and UTKFace's race groups come equally often (each set keeps
            its share of draws; :mod:`train.sampling`); None: on with several sets,
            off (plain shuffling, as before) with one. balance_race: False evens only
            the genders (UTKFace's races are drawn as they come).
        out: directory for fold folders, summary and plots.
        arch: any timm model name; input_size, crop_scale: go into the model's meta.
        level_eyes: the model levels its crops by the eyes (its meta's ``level_eyes``);
            None: as the sets' ``facecrops.json`` say; a set recorded otherwise is
            refused (:func:`train.croprecord.training_level_eyes`).
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
            and gender labels must be the run's. ``init_member``: which network of an
            ensemble (``realtime ensemble``) to start from.
        teachers: checkpoints to distil from: their averaged predictions on each
            augmented batch are soft targets (knowledge distillation), weighted
            ``distill`` (0-1) against the labels.
        teacher_cache: instead, the outputs of teachers trained on other faces,
            cached once by ``realtime teach`` (:mod:`train.teach`): soft targets
            weighted ``distill``, and faceres' 1024-d feature matched through a
            projection with weight ``feature_weight`` (0: off). calibrate_teachers:
            re-centre each teacher's gender on each set's training faces first
            (:meth:`train.teach.TeacherCache.calibrate_gender`).
    """

    data: Path | tuple[Path, ...]
    format: str | tuple[str, ...] = "utkface"
    out: Path = Path("runs/train")
    arch: str = "mobilenetv3_small_100"
    input_size: int = 112
    crop_scale: float = 1.15
    level_eyes: bool | None = None
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
    init_member: int = 0
    teachers: tuple[Path, ...] = ()
    distill: float = 0.5
    teacher_cache: Path | None = None
    feature_weight: float = 0.0
    calibrate_teachers: bool = True
    age_groups: str = "adience"
    balance: bool | None = None
    balance_race: bool = True

    def __post_init__(self) -> None:
        check_fields(self)  # the one table of limits: before anything is read
        from train.ages import parse_scheme
        from train.formats import pair_sets

        self.sets = pair_sets(self.data, self.format)
        self.data, self.format = (self.sets[0] if len(self.sets) == 1 else tuple(zip(*self.sets)))
        self.level_eyes = training_level_eyes(self.sets, self.level_eyes)
        self.out = Path(self.out)
        self.age_labels = parse_scheme(self.age_groups).labels  # fails before any data is read
        self.init = None if self.init is None else Path(self.init)
        self.teachers = tuple(Path(t) for t in self.teachers)
        self.teacher_cache = None if self.teacher_cache is None else Path(self.teacher_cache)
        if self.teacher_cache is not None and self.teachers:
            raise RealtimeError("give --teacher (models run on every batch) or --teacher-cache (outputs cached by `realtime teach`), not both")
        if self.feature_weight > 0 and self.teacher_cache is None:
            raise RealtimeError("--feature-weight needs --teacher-cache (the teacher's features come from the cache)")
        if self.teacher_cache is not None and not self.teacher_cache.is_file():
            raise RealtimeError(f"--teacher-cache {self.teacher_cache}: no such file")
        if self.years_bins < 0 or self.years_bins == 1:
            raise RealtimeError(f"--years-bins must be 0 (a linear head) or at least 2, got {self.years_bins}")
        self.meta()  # a meta no reader would take fails now, not at the end of training
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
        cache = [self.teacher_cache] if self.teacher_cache else []
        return [*(f for data, _ in self.sets for f in label_files(data)), *([self.init] if self.init else []), *self.teachers, *cache]

    def outputs(self) -> list[tuple[str, Path]]:
        """Every file a run writes: --save and those under ``out`` (none may be an input)."""
        names = ("last.pt", "best.safetensors", "final.safetensors", "epochs.csv", "result.json")
        files = [("--save", self.save)] if self.save is not None else []
        files += [("--out", self.out / n) for n in ("settings.json", "summary.json", "summary.md")]
        return files + [("--out", self.out / f"fold_{k}" / n) for k in range(self.folds) for n in names]

    @property
    def balanced(self) -> bool:
        """Whether training draws through the balanced sampler (see ``balance``)."""
        return len(self.sets) > 1 if self.balance is None else self.balance

    def meta(self) -> ModelMeta:
        return ModelMeta(
            arch=self.arch,
            input_size=self.input_size,
            crop_scale=self.crop_scale,
            level_eyes=bool(self.level_eyes),
            years_bins=self.years_bins,
            age_labels=self.age_labels,
            trained=True,
            trained_on=self.trained_on or " + ".join(f"{fmt} data at {data}" for data, fmt in self.sets),
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
    """Preloaded BGR images -> augmented RGB uint8 crops, their labels and their index.

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
            i,
        )


def to_input(rgb: torch.Tensor, cropper: Cropper, device: torch.device, channels_last: bool) -> torch.Tensor:
    """RGB uint8 (N, S, S, 3) -> normalised float32 (N, 3, S, S) on ``device``, as
    ``Cropper.normalize`` does it."""
    x = rgb.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    mean = torch.as_tensor(cropper.mean, device=device).view(1, 3, 1, 1)
    inv_std = torch.as_tensor(cropper.inv_std, device=device).view(1, 3, 1, 1)
    x = (x - mean) * inv_std
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def init_weights(net: AgeGenderNet, path: Path, member: int = 0) -> None:
    """Copy a checkpoint's weights into ``net`` (fine-tuning); same architecture and
    labels. A years head of another kind (``years_bins``) is left as initialised; an
    ensemble gives its member number ``member`` (the first by default)."""
    source = load_checkpoint(path)
    if isinstance(source, Ensemble):  # e.g. the default model: fine-tune one of its members
        if not 0 <= member < len(source.members):
            raise RealtimeError(f"--init-member {member}: {path} has members 0 to {len(source.members) - 1}")
        log.info("%s is an ensemble of %d networks: starting from member %d", path, len(source.members), member)
        source = source.members[member]
    elif member:
        raise RealtimeError(f"--init-member {member}: {path} is one network, not an ensemble")
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
def predict(net: nn.Module, inputs: "np.ndarray | AppInputs", device: torch.device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised inputs (N, 3, S, S) float32, sliced a batch at a time -> (age_logits (N, A), gender_logits (N, G), years (N,)) float32."""
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


class AppInputs:
    """BGR uint8 images (N, H, W, 3), each one whole face crop, seen as the app's inputs
    (N, 3, S, S) float32 through its own preprocessing (``Cropper.crop_whole``), made a
    slice at a time: a validation set's inputs held whole in float32 took about 1 GB."""

    def __init__(self, images: np.ndarray, meta: ModelMeta):
        self.images, self.cropper, self.side = images, Cropper(meta), meta.input_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice) -> np.ndarray:
        part = self.images[index]
        if not len(part):
            return np.zeros((0, 3, self.side, self.side), np.float32)
        return np.concatenate([self.cropper.crop_whole(im) for im in part])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


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


