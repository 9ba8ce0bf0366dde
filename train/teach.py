"""Teachers' outputs over the training faces, computed once and cached (.npz).

Distillation from models trained on other faces: HSE's faceres network (its gender,
its age and its 1024-d identity feature; ``hse_faceres.onnx``, Apache-2.0, research
data terms) and one of our own models (the default, an ensemble). Both run once over
every face of the given sets, on the face as stored (the chip the student is trained
on, un-augmented), and :class:`TeacherCache` hands the training loop each batch's soft
targets by the image's content hash (so a cache outlives file moves and set order)::

    realtime teach --data ../shared/data/utkface --format utkface \\
        --data /tmp/lfw_crops --format csv -o /tmp/teachers.npz
    realtime train ... --teacher-cache /tmp/teachers.npz --distill 0.5 --feature-weight 1

faceres sees each chip at its own framing, 1.5x the face box, at 224 px, and its
mirror image (the two views' outputs averaged; ``--no-flip``: the chip alone): cut from
the chip where its set records a wider framing (``realtime facecrops --crop-scale 1.5``
keeps the photo around the face), else the chip padded (edges replicated) from the
1.15x of an aligned chip. Our model sees the face at its own framing with its test-time
flip, as ``realtime eval --cropped`` does. On LFW's held-out photos through the detector,
faceres' balanced gender is 96.55% on the padded 1.15x crops, 96.91% on the photo's own
1.5x and 97.69% with the mirror added (MODEL_CARD.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np

from engines.crops import framed_side, warp_square
from engines.images import decode_image, read_bytes
from engines.writes import check_distinct, write_atomic
from realtime.errors import RealtimeError
from realtime.opinion import FACERES_AGES, age_groups

log = logging.getLogger(__name__)

#: faceres' framing (face box side x 1.5), and the framing a chip is taken at when its
#: set does not record one (an aligned UTKFace chip: 1.15, the app's default).
FACERES_FRAMING, CHIP_FRAMING = 1.5, 1.15
FEATURE_DIM = 1024


@dataclass
class TeachSettings:
    """What :func:`build_cache` runs.

    Attributes:
        data, format: the sets (paired in order, as for ``realtime train``).
        output: the .npz cache to write.
        faceres: ``hse_faceres.onnx`` (None: found as re-identification finds it).
        model: our teacher model (None: the default weights).
        batch_size: faces per call; threads: CPU threads per runtime.
        flip: faceres also sees each face mirrored, the two views averaged.
    """

    data: tuple[Path, ...]
    format: tuple[str, ...]
    output: Path
    faceres: Path | None = None
    model: Path | None = None
    batch_size: int = 64
    threads: int = 2
    flip: bool = True

    def __post_init__(self) -> None:
        from train.formats import label_files, pair_sets

        self.sets = pair_sets(self.data, self.format)
        self.output = Path(self.output)
        if self.output.suffix != ".npz":
            raise RealtimeError(f"-o {self.output}: the cache is a .npz file")
        if self.faceres is None:
            from realtime.embedders import find_faceres

            self.faceres = find_faceres()
            if self.faceres is None:
                raise RealtimeError("hse_faceres.onnx not found: give --faceres PATH or run `realtime models fetch --from ../shared/models`")
        self.faceres = Path(self.faceres)
        if not self.faceres.is_file():
            raise RealtimeError(f"--faceres {self.faceres}: no such file")
        inputs = [self.faceres, *([Path(self.model)] if self.model else []), *(f for d, _ in self.sets for f in label_files(d))]
        check_distinct(inputs, [("-o", self.output)])


class _Faceres:
    """faceres' gender P(male) (N,), age probabilities (N, 100) and feature (N, 1024),
    through the re-identification embedder's session (its preprocessing and checks)."""

    OUTPUTS = ("gender_pred/Sigmoid:0", "age_pred/Softmax:0", "global_pooling/Mean:0")

    def __init__(self, path: Path, threads: int):
        from realtime.embedders import FaceresEmbedder

        self.net = FaceresEmbedder(path, threads, option="--faceres")
        if not set(self.OUTPUTS) <= {o.name for o in self.net.session.get_outputs()}:
            raise RealtimeError(f"{path}: not the faceres network (outputs {self.OUTPUTS} expected)")

    @staticmethod
    def view(chip: np.ndarray, framing: float = float("nan")) -> np.ndarray:
        """A BGR chip (H, W, 3) spanning ``framing`` face-box sides (NaN: an aligned
        chip's 1.15) -> faceres' framing, (224, 224, 3) uint8."""
        h, w = chip.shape[:2]
        side = framed_side(max(h, w), framing if np.isfinite(framing) else CHIP_FRAMING, FACERES_FRAMING)
        return warp_square(chip, w / 2, h / 2, side, 224)

    def __call__(self, views: np.ndarray, flip: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 224, 224, 3) uint8 views -> P(male) (N,), age probabilities (N, 100),
        feature (N, 1024); with ``flip`` each the mean over the view and its mirror."""
        net = self.net
        n = len(views)
        batch = np.concatenate([views, views[:, :, ::-1]]) if flip else views
        gender, age, feature = net.session.run(list(self.OUTPUTS), {net.input: batch.astype(np.float32) - net.MEANS})
        if flip:
            gender, age, feature = ((a[:n] + a[n:]) / 2 for a in (gender, age, feature))
        return gender.reshape(-1), age, feature


def build_cache(settings: TeachSettings, progress: Callable[[int, str], ContextManager] | None = None) -> dict:
    """Run the teachers over every face of ``settings.sets`` and write the cache.

    Returns counts (``faces``, ``unique``, ``unreadable``)."""
    from realtime.analyzer import AnalyzerSettings, make_engine
    from realtime.crops import Cropper
    from train.formats import load_sets
    from train.trainer import _null_progress

    progress = progress or _null_progress
    data = load_sets(settings.sets)
    faceres = _Faceres(settings.faceres, settings.threads)
    engine = make_engine(AnalyzerSettings(model=settings.model, flip=True, track=False))
    cropper = Cropper(engine.meta)
    keys, seen, columns = [], set(), {k: [] for k in ("faceres_male", "faceres_age", "faceres_feature", "ours_age", "ours_gender", "ours_years")}
    batch_views, batch_crops = [], []
    unreadable = 0

    def flush() -> None:
        if not batch_views:
            return
        male, age, feature = faceres(np.stack(batch_views), settings.flip)
        ours = engine.infer_raw(np.concatenate(batch_crops))
        for name, value in (("faceres_male", male), ("faceres_age", age.astype(np.float16)), ("faceres_feature", feature.astype(np.float16)),
                            ("ours_age", ours.age_probs), ("ours_gender", ours.gender_probs), ("ours_years", ours.age_years)):  # fmt: skip
            columns[name].append(np.asarray(value))
        batch_views.clear()
        batch_crops.clear()

    with progress(len(data), "teaching") as bar:
        for path, framing in zip(data.files, data.framing.tolist()):
            bar.update(1)
            try:  # read once: hashed, then decoded unless an identical file was
                raw = read_bytes(path)
                key = hashlib.sha256(raw).hexdigest()
                if key in seen:
                    continue
                chip = decode_image(raw, path)
            except RealtimeError as e:
                log.warning("skipping %s", e)
                unreadable += 1
                continue
            seen.add(key)
            keys.append(key)
            batch_views.append(faceres.view(chip, framing))
            batch_crops.append(cropper.crop_whole(chip, framing))
            if len(batch_views) >= settings.batch_size:
                flush()
        flush()
    if not keys:
        raise RealtimeError("none of the images could be read")
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    about = {"faceres": settings.faceres.name, "model": str(settings.model or "default"), "age_labels": list(engine.meta.age_labels),
             "gender_labels": list(engine.meta.gender_labels), "sets": [str(d) for d, _ in settings.sets],
             "faceres_flip": settings.flip}  # fmt: skip
    import io

    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), about=np.array(json.dumps(about)), **arrays)
    write_atomic(settings.output, buf.getvalue())
    return {"faces": len(data), "unique": len(keys), "unreadable": unreadable}


class TeacherCache:
    """A cache written by :func:`build_cache`, aligned to a training set.

    ``rows(content_keys)`` -> (N,) int64 row of each image (every image must be there);
    ``soft(rows, has_age)`` -> the soft targets of a batch as numpy arrays:
    age probabilities (N, A) in the run's scheme, gender probabilities (N, 2) and years
    (N,), each the mean of the teachers (age: ours alone where the image has an age
    label, ours and faceres averaged where it has none), and faceres' feature (N, 1024)."""

    def __init__(self, path: Path, age_labels: tuple[str, ...], gender_labels: tuple[str, ...]):
        try:
            with np.load(path, allow_pickle=False) as z:
                self.keys = z["keys"]
                about = json.loads(str(z["about"]))
                arrays = {k: z[k] for k in z.files if k not in ("keys", "about")}
        except (OSError, ValueError, KeyError) as e:
            raise RealtimeError(f"--teacher-cache {path}: not a cache written by `realtime teach` ({e})") from None
        if tuple(about["age_labels"]) != tuple(age_labels) or tuple(about["gender_labels"]) != tuple(gender_labels):
            raise RealtimeError(f"--teacher-cache {path}: made with labels {about['age_labels']}, {about['gender_labels']}; "
                                "the run's differ (make the cache again with a model of the run's age scheme)")
        self.index = {k: i for i, k in enumerate(self.keys.tolist())}
        faceres_age = arrays["faceres_age"].astype(np.float32)
        male = arrays["faceres_male"].astype(np.float32)
        self.faceres_groups = faceres_age @ age_groups(age_labels)
        self.faceres_years = faceres_age @ FACERES_AGES.astype(np.float32)
        self.male = tuple(gender_labels).index("male")  # the P(male) column of every gender array
        self.faceres_gender = np.stack([1 - male, male] if self.male == 1 else [male, 1 - male], axis=1)
        self.feature = arrays["faceres_feature"]
        self.ours = (arrays["ours_age"].astype(np.float32), arrays["ours_gender"].astype(np.float32), arrays["ours_years"].astype(np.float32))

    def calibrate_gender(self, rows: np.ndarray, gender: np.ndarray, source: np.ndarray) -> list[dict]:
        """Re-centre each teacher's gender on the training faces, set by set: faceres
        says "male" too readily on photos in the wild (its authors threshold at 0.6) and
        so does our own model on LFW, so their raw P(male) would teach the student that
        bias. For each set (``source``) and teacher, :func:`train.calibration.fit_platt`
        on that set's training faces (rows (N,) int64, gender (N,) int, -1 unknown)
        replaces the cached P(male) of those rows. Returns one report per set and teacher:
        the fit and the balanced accuracy of its answers before and after."""
        from train.calibration import fit_platt, platt

        male = self.male
        report = []
        for s in np.unique(source):
            rs, gs = rows[source == s], gender[source == s]
            for name, probs in (("faceres", self.faceres_gender), ("ours", self.ours[1])):
                raw = probs[rs, male]
                a, b = fit_platt(raw, np.where(gs < 0, -1, (gs == male).astype(int)))
                new = platt(raw, a, b)
                probs[rs, male], probs[rs, 1 - male] = new, 1 - new
                report.append({"set": int(s), "teacher": name, "a": round(a, 4), "b": round(b, 4),
                               "balanced_before": _balanced(raw, gs, male), "balanced_after": _balanced(new, gs, male)})
        return report

    def rows(self, content_keys: list[str]) -> np.ndarray:
        missing = [k for k in content_keys if k not in self.index]
        if missing:
            raise RealtimeError(f"--teacher-cache: {len(missing)} of the {len(content_keys)} training images are not in the cache "
                                "(make it with `realtime teach` over the same --data)")
        return np.array([self.index[k] for k in content_keys], np.int64)

    def soft(self, rows: np.ndarray, has_age: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ours_age, ours_gender, ours_years = (a[rows] for a in self.ours)
        wild = ~has_age[:, None]
        age = np.where(wild, (ours_age + self.faceres_groups[rows]) / 2, ours_age)
        years = np.where(wild[:, 0], (ours_years + self.faceres_years[rows]) / 2, ours_years)
        gender = (ours_gender + self.faceres_gender[rows]) / 2
        return age, gender, years, self.feature[rows].astype(np.float32)


def _balanced(p_male: np.ndarray, gender: np.ndarray, male: int) -> float | None:
    """Mean over the two genders of the share answered right at 0.5 (None: one is missing)."""
    said = np.where(p_male >= 0.5, male, 1 - male)
    each = [float((said[gender == g] == g).mean()) for g in (0, 1) if (gender == g).any()]
    return round(float(np.mean(each)), 4) if len(each) == 2 else None
