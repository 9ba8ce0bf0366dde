"""Issue 17: the detector crops of a photo set (`realtime facecrops`), the teachers'
outputs cached once (`realtime teach`), training from that cache (soft targets and
faceres' feature through a projection), and the wild augmentations; on real LFW and
UTKFace faces from ../shared."""

from __future__ import annotations

import csv
import hashlib
import shutil

import numpy as np
import pytest
import torch

from engines.images import read_image
from tests.helpers import invoke, shared_path, subset_set, tiny
from train.augment import Augmenter, AugmentSettings
from train.teach import TeacherCache


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """16 LFW photos (8 women, 8 men) cut by `realtime facecrops`, and 16 UTKFace chips."""
    root = tmp_path_factory.mktemp("teach")
    lfw, utk = shared_path("data", "lfw"), shared_path("data", "utkface")
    rows = list(csv.DictReader(open(lfw / "labels.csv")))
    pick = [r for r in rows if r["gender"] == "female"][:8] + [r for r in rows if r["gender"] == "male"][:8]
    subset_set(lfw, root / "lfw", pick)
    utk_rows = list(csv.DictReader(open(utk / "labels.csv")))[::1350][:16]
    subset_set(utk, root / "utk", utk_rows)
    result = invoke("facecrops", "--data", root / "lfw", "--format", "csv", "--out", root / "crops")
    assert result.exit_code == 0, result.output
    return root


def test_facecrops_cuts_each_photo_and_keeps_labels_and_person(sets):
    crops = list(csv.DictReader(open(sets / "crops" / "labels.csv")))
    source = {r["file"].split("/")[-1].rsplit(".", 1)[0]: r for r in csv.DictReader(open(sets / "lfw" / "labels.csv"))}
    assert len(crops) == 16  # one centred face in each LFW photo
    for row in crops:
        original = source[row["file"].split("__")[-1].rsplit(".", 1)[0]]
        assert (row["gender"], row["group"], row["age"]) == (original["gender"], original["group"], "")
        chip = read_image(sets / "crops" / row["file"])
        assert chip.shape == (128, 128, 3)


def test_facecrops_refuses_a_folder_in_use_or_inside_the_source(sets):
    result = invoke("facecrops", "--data", sets / "lfw", "--format", "csv", "--out", sets / "crops")
    assert result.exit_code != 0 and "new or empty folder" in result.output
    result = invoke("facecrops", "--data", sets / "lfw", "--format", "csv", "--out", sets / "lfw" / "crops")
    assert result.exit_code != 0 and "inside the source set" in result.output


@pytest.fixture(scope="module")
def cache(sets):
    shared_path("models", "teachers", "hse_faceres.onnx")
    out = sets / "teachers.npz"
    result = invoke("teach", "--data", sets / "utk", "--format", "utkface", "--data", sets / "crops", "--format", "csv",
                    "-o", out, "--faceres", shared_path("models", "teachers", "hse_faceres.onnx"), "--threads", 1)
    assert result.exit_code == 0, result.output
    return out


def test_teach_caches_every_face_by_its_content(sets, cache):
    from engines.meta import AGE_LABELS, GENDER_LABELS

    teachers = TeacherCache(cache, AGE_LABELS, GENDER_LABELS)
    crops = list(csv.DictReader(open(sets / "crops" / "labels.csv")))
    files = sorted((sets / "utk" / "images").iterdir()) + [sets / "crops" / r["file"] for r in crops]
    keys = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    rows = teachers.rows(keys)
    assert len(set(rows.tolist())) == 32
    has_age = np.array([True] * 16 + [False] * 16)
    age, gender, years, feature = teachers.soft(rows, has_age)
    assert age.shape == (32, 8) and gender.shape == (32, 2) and feature.shape == (32, 1024)
    assert np.allclose(age.sum(1), 1, atol=1e-3) and np.allclose(gender.sum(1), 1, atol=1e-3)
    ours_age = teachers.ours[0][rows]
    assert np.allclose(age[:16], ours_age[:16])  # labelled ages: our model's age alone
    assert not np.allclose(age[16:], ours_age[16:])  # LFW (no ages): averaged with faceres'
    # faceres on the LFW crops: it reads these news photos' genders (98.8% on all of LFW)
    truth = np.array([r["gender"] == "male" for r in crops], int)
    assert (teachers.faceres_gender[rows[16:]].argmax(1) == truth).mean() >= 0.8
    assert np.isfinite(feature).all() and feature.std() > 0.01  # a real feature: finite, not constant
    women, men = feature[16:][truth == 0], feature[16:][truth == 1]
    assert np.abs(women[:, None] - men[None]).max(2).min() > 0  # no woman's feature is a man's


def test_teachers_gender_is_recentred_on_each_sets_training_faces(sets, cache):
    from engines.meta import AGE_LABELS, GENDER_LABELS
    from train.formats import load_sets

    teachers = TeacherCache(cache, AGE_LABELS, GENDER_LABELS)
    data = load_sets(((sets / "utk", "utkface"), (sets / "crops", "csv")))
    rows = teachers.rows(data.content_keys())
    before = [teachers.faceres_gender[rows, 1].copy(), teachers.ours[1][rows, 1].copy()]
    report = teachers.calibrate_gender(rows, data.gender, data.source)
    assert [(r["set"], r["teacher"]) for r in report] == [(0, "faceres"), (0, "ours"), (1, "faceres"), (1, "ours")]
    assert all(r["a"] > 0 for r in report)  # a monotone map: no teacher's ranking of faces changes
    for old, new in zip(before, (teachers.faceres_gender[rows, 1], teachers.ours[1][rows, 1])):
        for s in (0, 1):
            g, p = data.gender[data.source == s], new[data.source == s]
            # the fit's optimum: P(male) averages 0.5 over the two genders weighted equally
            assert (p[g == 1].mean() + p[g == 0].mean()) / 2 == pytest.approx(0.5, abs=1e-3)
            o = old[data.source == s]
            assert (np.sign(o[:, None] - o[None]) * np.sign(p[:, None] - p[None]) >= 0).all()  # order kept
    assert np.allclose(teachers.faceres_gender[rows].sum(1), 1, atol=1e-6)
    _, gender, _, _ = teachers.soft(rows, data.age_group >= 0)
    assert np.allclose(gender[:, 1], (teachers.ours[1][rows, 1] + teachers.faceres_gender[rows, 1]) / 2)


@pytest.mark.slow  # two training runs (about 2 s); the cache tests stay quick
def test_training_from_the_cache_learns_the_feature_and_resumes(sets, cache, tmp_path):
    from train.fit import cross_validate

    data = (sets / "utk", sets / "crops")
    kw = dict(format=("utkface", "csv"), teacher_cache=cache, feature_weight=1.0, holdout=0.25)
    cross_validate(tiny(data, tmp_path, epochs=1, **kw))
    state = torch.load(tmp_path / "fold_0" / "last.pt", weights_only=True)
    assert state["feature"]["projection.weight"].shape == (1024, 1024)  # the projection trains with the net and resumes
    (tmp_path / "fold_0" / "result.json").unlink()  # as if stopped after epoch 1 of 2
    cross_validate(tiny(data, tmp_path, epochs=2, resume=True, **kw))
    assert torch.load(tmp_path / "fold_0" / "last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.slow  # one training run (about 2 s)
def test_training_reads_and_hashes_each_image_once_and_finds_the_same_rows(sets, cache, tmp_path, monkeypatch):
    """A run with a teacher cache reads each image file once (decoded and hashed from
    the same bytes): its split keys and its cache rows reuse that digest. The rows are
    those of each file's sha256 computed from its bytes, as before."""
    import builtins
    import io
    from collections import Counter
    from pathlib import Path

    import cv2

    import train.fit
    from engines.meta import AGE_LABELS, GENDER_LABELS
    from train.formats import load_sets

    data = (sets / "utk", sets / "crops")
    files = {Path(f).resolve() for f in load_sets(list(zip(data, ("utkface", "csv")))).files}
    reads: Counter = Counter()

    def counting(real):
        def opener(path, *args, **kw):
            if isinstance(path, (str, Path)) and Path(path).resolve() in files:
                reads[Path(path).resolve()] += 1
            return real(path, *args, **kw)
        return opener

    # every read of a file: Python's open (np.fromfile opens through io.open) or OpenCV's
    for module, name in ((builtins, "open"), (io, "open"), (cv2, "imread")):
        monkeypatch.setattr(module, name, counting(getattr(module, name)))
    trained, found = [], []
    fit, rows = train.fit.fit, TeacherCache.rows

    def fitting(settings, images, labels, *args, **kw):
        trained.append(labels.files)
        return fit(settings, images, labels, *args, **kw)

    def finding(self, keys):
        found.append(rows(self, keys))
        return found[-1]

    monkeypatch.setattr(train.fit, "fit", fitting)
    monkeypatch.setattr(TeacherCache, "rows", finding)
    train.fit.cross_validate(tiny(data, tmp_path, format=("utkface", "csv"), teacher_cache=cache, feature_weight=1.0, holdout=0.25))
    monkeypatch.undo()
    assert len(files) == 32 and reads == Counter(dict.fromkeys(files, 1))  # every file read, once
    teachers = TeacherCache(cache, AGE_LABELS, GENDER_LABELS)
    before = teachers.rows([hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in trained[0]])
    assert len(found) == 1 and 0 < len(before) < 32 and found[0].tolist() == before.tolist()


def test_a_cache_of_other_faces_is_refused_in_one_line(sets, cache, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sets / "utk", other)
    img = read_image(next((other / "images").iterdir()))
    import cv2

    cv2.imwrite(str(next((other / "images").iterdir())), 255 - img)  # bytes the cache never saw
    result = invoke("train", "--data", other, "--format", "utkface", "--teacher-cache", cache, "--folds", 1, "--epochs", 1,
                    "--input-size", 32, "--out", tmp_path / "run", "--threads", 1)
    assert result.exit_code != 0 and "not in the cache" in result.output
    result = invoke("train", "--data", other, "--format", "utkface", "--feature-weight", 1, "--out", tmp_path / "run2")
    assert result.exit_code != 0 and "--feature-weight needs --teacher-cache" in result.output


def test_wild_augmentations_change_the_face_and_repeat_by_seed():
    chip = read_image(next(iter(sorted((shared_path("data", "utkface") / "images").iterdir()))))
    plain, wild = Augmenter(64, AugmentSettings()), Augmenter(64, AugmentSettings.wild())
    a, b = wild(chip, np.random.default_rng(3)), wild(chip, np.random.default_rng(3))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and (a == b).all()
    import dataclasses

    always = Augmenter(64, dataclasses.replace(AugmentSettings.off(), occlude=1.0))
    off = Augmenter(64, AugmentSettings.off())
    diff = np.abs(always(chip, np.random.default_rng(0)).astype(int) - off(chip, np.random.default_rng(0))).max(2) > 0
    assert 0.02 < diff.mean() < 0.2  # one rectangle of 15-40% of the side each way
    shade = Augmenter(64, dataclasses.replace(AugmentSettings.off(), shade=1.0))(chip, np.random.default_rng(1))
    assert shade.astype(int).sum() < off(chip, np.random.default_rng(1)).astype(int).sum()  # light falls off
    assert not (plain(chip, np.random.default_rng(5)) == wild(chip, np.random.default_rng(5))).all()


def test_eval_reports_each_gender_and_their_mean(sets, tmp_path):
    import json

    result = invoke("eval", "--data", sets / "crops", "--format", "csv", "--cropped", "--predictions", tmp_path / "p.csv",
                    "--json", tmp_path / "m.json", "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    each = [metrics["by_gender"][g]["gender_acc"] for g in ("female", "male")]
    assert metrics["overall"]["gender_balanced"] == pytest.approx(sum(each) / 2)
    assert "gender by true gender: female" in result.output and "(8)" in result.output and "balanced" in result.output


@pytest.mark.slow  # a real process interrupted mid-run (about 5 s)
def test_facecrops_interrupted_leaves_nothing_and_a_rerun_completes(tmp_path):
    import signal
    import time

    from tests.helpers import realtime

    lfw = shared_path("data", "lfw")
    subset_set(lfw, tmp_path / "lfw", list(csv.DictReader(open(lfw / "labels.csv")))[:400])
    out = tmp_path / "crops"
    proc = realtime("facecrops", "--data", tmp_path / "lfw", "--format", "csv", "--out", out)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".crops.partial-*/images/*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".crops.partial-*"))  # nothing half-written
    result = invoke("facecrops", "--data", tmp_path / "lfw", "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(open(out / "labels.csv")))) == len(list((out / "images").iterdir())) > 390


@pytest.fixture(scope="module")
def wide(sets):
    """The same 16 LFW photos cut wider, as the teachers see them best: 1.5x the box at 224 px."""
    result = invoke("facecrops", "--data", sets / "lfw", "--format", "csv", "--out", sets / "wide",
                    "--crop-scale", 1.5, "--side", 224)
    assert result.exit_code == 0, result.output
    return sets / "wide"


def test_a_wider_crop_gives_the_model_its_own_framing(sets, wide):
    """A set cut at 1.5x records it; training's pixels and eval's `--cropped` cut the model's
    1.15x from it, so the student sees the face as in the 1.15x crops of the same photos."""
    from engines.crops import Cropper
    from engines.meta import ModelMeta
    from train.data import read_images
    from train.formats import load_dataset

    plain, wider = load_dataset(sets / "crops", "csv"), load_dataset(wide, "csv")
    assert np.isnan(load_dataset(sets / "utk", "utkface").framing).all()  # aligned chips: no framing recorded
    assert (plain.framing == np.float32(1.15)).all() and (wider.framing == 1.5).all()
    _, a = read_images(plain, 128, crop_scale=1.15)
    _, b = read_images(wider, 128, crop_scale=1.15)
    _, whole = read_images(wider, 128)  # without the model's framing: the whole wider crop, as before
    diff, off = np.abs(a.astype(int) - b).mean(), np.abs(a.astype(int) - whole).mean()
    assert diff < 6 < off, (diff, off)  # the same face (measured 1.8 grey levels: two resamplings and WebP apart), not the wider view (40.6)
    cropper = Cropper(ModelMeta(input_size=128, crop_scale=1.15))
    chip_a, chip_b = read_image(plain.files[0]), read_image(wider.files[0])
    assert np.abs(cropper.crop_whole(chip_a) - cropper.crop_whole(chip_b, 1.5)).mean() < 0.12  # in normalised units
    assert np.abs(cropper.crop_whole(chip_a) - cropper.crop_whole(chip_b)).mean() > 0.3


def test_teach_sees_the_wider_crop_whole_and_its_mirror(wide, tmp_path):
    """faceres sees a 1.5x crop as it is (no padding), and the cache holds the mean over
    the face and its mirror; --no-flip the face alone."""
    from engines.meta import AGE_LABELS, GENDER_LABELS
    from train.formats import load_dataset
    from train.teach import _Faceres

    model = shared_path("models", "teachers", "hse_faceres.onnx")
    for flip in ("--flip", "--no-flip"):
        result = invoke("teach", "--data", wide, "--format", "csv", "-o", tmp_path / f"{flip}.npz", "--faceres", model,
                        "--threads", 1, flip)
        assert result.exit_code == 0, result.output
    data = load_dataset(wide, "csv")
    chips = np.stack([read_image(f) for f in data.files])
    net = _Faceres(model, 1)
    assert (net.view(chips[0], 1.5) == chips[0]).all()  # the photo's own 1.5x: nothing replicated, nothing resampled
    alone, mirrored = net(chips)[0], net(np.ascontiguousarray(chips[:, :, ::-1]))[0]
    assert np.abs(alone - mirrored).max() > 1e-2  # the mirror is a second opinion (measured 0.063)
    for flip, expected in (("--flip", (alone + mirrored) / 2), ("--no-flip", alone)):
        teachers = TeacherCache(tmp_path / f"{flip}.npz", AGE_LABELS, GENDER_LABELS)
        got = teachers.faceres_gender[teachers.rows(data.content_keys()), teachers.male]
        assert np.allclose(got, expected, atol=1e-4)  # measured 0 here; other batchings may round differently


def test_a_record_with_a_bad_framing_is_refused_in_one_line(wide, tmp_path):
    import json

    copy = tmp_path / "copy"
    shutil.copytree(wide, copy)
    for bad in (10, "1.5", None):
        record = json.loads((copy / "facecrops.json").read_text())
        (copy / "facecrops.json").write_text(json.dumps({**record, "crop_scale": bad}))
        result = invoke("eval", "--data", copy, "--format", "csv", "--cropped", "--predictions", tmp_path / "p.csv")
        assert result.exit_code != 0 and "crop_scale" in result.output and "Traceback" not in result.output, result.output


def test_a_shrunk_copy_of_a_wider_set_keeps_its_framing(wide, tmp_path):
    """train.shrink copies facecrops.json: the copy's faces are still cut at the model's 1.15x
    (without the record the model would learn from the whole 1.5x crop)."""
    from train.data import read_images
    from train.formats import load_dataset
    from train.shrink import shrink

    assert shrink(wide, tmp_path / "small", "csv", side=128) == 16
    small, original = load_dataset(tmp_path / "small", "csv"), load_dataset(wide, "csv")
    assert (small.framing == 1.5).all()
    record = __import__("json").loads((tmp_path / "small" / "facecrops.json").read_text())
    assert record["side"] == 128 and record["crop_scale"] == 1.5 and record["level_eyes"] is False
    _, a = read_images(original, 64, crop_scale=1.15)
    _, b = read_images(small, 64, crop_scale=1.15)
    assert np.abs(a.astype(int) - b).mean() < 6  # measured 2.9 grey levels: one more resampling and WebP pass
