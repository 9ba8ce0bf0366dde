"""The second opinion on gender (realtime/opinion.py): faceres' own gender, from the run
re-identification makes anyway, fused into each track's and scored by `realtime eval
--second-opinion`; real LFW photos and the stage clip from ../shared (skipped without)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from engines.calibration import platt
from engines.meta import AGE_LABELS, ModelMeta
from realtime.opinion import FACERES_PLATT, Opinion, fuse, looks, supported
from realtime.reid import Gallery, ReidSettings
from realtime.tracker import Track
from tests.helpers import one_line, run_cli, shared_path

FACERES = ("models", "teachers", "hse_faceres.onnx")
LFW = ("data", "lfw")
STAGE = ("media", "stage_360p.mp4")


@pytest.fixture(scope="module")
def faceres(detector_models) -> Path:
    return shared_path(*FACERES)


def lfw_faces(n: int, seed: int = 0):
    """``n`` LFW hold-out photos (both genders), each with its largest detected face:
    (path, BGR image, (4,) box, 0 female / 1 male)."""
    from engines.images import read_image
    from realtime.detector import FaceDetector
    from train.data import holdout_mask
    from train.formats import load_dataset

    data = load_dataset(shared_path(*LFW), "csv")
    held = holdout_mask(data, 0.15)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(held & (data.gender == g)), n // 2, replace=False) for g in (0, 1)])
    detector, out = FaceDetector(), []
    try:
        for i in pick:
            image = read_image(data.files[i])
            faces = detector.detect(image)
            if len(faces):
                out.append((data.files[i], image, faces.boxes[int(np.argmax(faces.areas))], int(data.gender[i])))
    finally:
        detector.close()
    return out


def op(gender, age, years) -> Opinion:
    return Opinion(np.array(gender, np.float32), np.array(age, np.float32), np.float32(years))


def test_the_opinion_is_in_the_models_label_order():
    """Gender columns follow the model's labels (rows sum to 1, re-centred by the Platt
    fit); faceres' 100 age bins go to the model's age groups and to their mean in years;
    labels other than female/male take no opinion."""
    raw = np.array([0.2, 0.7, 0.99], np.float32)
    ages = np.zeros((3, 100), np.float32)
    ages[0, 0], ages[1, 29], ages[2, [59, 79]] = 1.0, 1.0, 0.5  # 1 year; 30 years; 60 and 80 years
    fm = looks(raw, ages, ("female", "male"), AGE_LABELS)
    mf = looks(raw, ages, ("male", "female"), ("0-12", "13-59", "60+"))
    assert fm.gender.shape == (3, 2) and np.allclose(fm.gender.sum(1), 1) and np.allclose(fm.gender, mf.gender[:, ::-1])
    assert np.allclose(fm.gender[:, 1], platt(raw, *FACERES_PLATT))
    assert fm.age.argmax(1).tolist() == [0, 4, 7] and np.allclose(fm.years, [1, 30, 70])
    assert np.allclose(mf.age, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert supported(ModelMeta(gender_labels=("male", "female"))) and not supported(ModelMeta(gender_labels=("f", "m")))
    assert not supported(ModelMeta(age_labels=("young", "old")))


def test_an_opinion_moves_a_tracks_labels_and_stays_with_its_person():
    """A track the model calls female at 0.6 becomes male when faceres says male at 0.9
    (fused 0.35 / 0.65), and its age moves halfway to faceres'; one the model calls male
    at 0.8 becomes female when faceres says female at 0.95 (fused 0.575: the opinion is
    not held back by the hysteresis, later frames are); the person keeps the opinion for
    their next track, which starts from it; a face taken for a child keeps the model's gender."""
    track = Track(1, np.zeros(4, np.float32), 0, 0)
    track.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.6, 0.4], np.float32), 30.0, 1.0, 0.8, 0, 0.15)
    assert track.gender_class == 0 and track.age_class == 1
    track.add_opinion(op([0.1, 0.9], [1.0, 0.0], 50.0))
    assert track.gender_probs == pytest.approx([0.35, 0.65]) and track.gender_class == 1
    assert track.age_probs == pytest.approx([0.5, 0.5]) and track.age_years == pytest.approx(40.0)
    g, face = Gallery(0.6, ReidSettings()), np.ones(8, np.float32) / np.sqrt(8)
    g.update(0, track, face, 0.0)
    g.release((0, 1), track)
    nxt = Track(2, np.zeros(4, np.float32), 5, 5)
    nxt.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.6, 0.4], np.float32), 30.0, 1.0, 0.8, 5, 0.15)
    g.update(0, nxt, face, 1.0)
    assert nxt.opinions == 1
    assert nxt.gender_probs == pytest.approx(fuse([0.6, 0.4], [0.0, 1.0], 30.0, op([0.1, 0.9], [1.0, 0.0], 50.0))[0])
    close = Track(4, np.zeros(4, np.float32), 0, 0)
    close.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.2, 0.8], np.float32), 80.0, 1.0, 0.8, 0, 0.15)
    close.add_opinion(op([0.95, 0.05], [0.0, 1.0], 80.0))
    assert close.gender_probs == pytest.approx([0.575, 0.425]) and close.gender_class == 0
    for frame in (1, 2, 3):  # later frames all male: the fused answer leans male, by less than the hysteresis
        close.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.0, 1.0], np.float32), 80.0, 1.0, 0.8, frame, 0.15)
    assert 0.425 < close.gender_probs[0] < 0.5 and close.gender_class == 0
    child = Track(3, np.zeros(4, np.float32), 0, 0)  # faceres is near chance on children: the model's stands
    child.add_prediction(np.array([1.0, 0.0], np.float32), np.array([0.6, 0.4], np.float32), 8.0, 1.0, 0.8, 0, 0.15)
    child.add_opinion(op([0.1, 0.9], [1.0, 0.0], 10.0))
    assert child.gender_probs == pytest.approx([0.6, 0.4]) and child.gender_class == 0 and child.age_years == pytest.approx(9.0)


@pytest.mark.slow
def test_faceres_looks_once_for_identity_and_gender(faceres, detector_models):
    """``look`` is one run: the same vectors as ``embed``, and the gender and age teach's
    faceres gives on the same 1.5x view. Re-centred, its answers are more balanced between
    women and men on LFW photos than raw (faceres says "male" too readily in the wild)."""
    from engines.crops import warp_square
    from realtime.embedders import FaceresEmbedder
    from train.teach import _Faceres

    net, teacher = FaceresEmbedder(faceres), _Faceres(faceres, 1)
    faces = lfw_faces(120)
    male, truth = [], []
    for _, image, box, gender in faces:
        vectors, p, age = net.look(image, box[None])
        assert np.allclose(vectors, net.embed(image, box[None]), atol=1e-6)
        (x1, y1, x2, y2), side = box, max(box[2] - box[0], box[3] - box[1]) * 1.5
        view = warp_square(image, (x1 + x2) / 2, (y1 + y2) / 2, side, 224)
        their_male, their_age, _ = teacher(view[None])
        assert p[0] == pytest.approx(their_male[0], abs=1e-5) and np.allclose(age, their_age, atol=1e-5)
        male.append(p[0])
        truth.append(gender)
    male, truth = np.array(male), np.array(truth)
    gap = lambda p: abs((p[truth == 0] < 0.5).mean() - (p[truth == 1] >= 0.5).mean())  # noqa: E731
    assert len(male) >= 100 and gap(platt(male, *FACERES_PLATT)) < gap(male)


@pytest.mark.slow
def test_tracks_take_faceres_opinion_on_the_stage_clip(faceres, detector_models):
    """With re-identification on faceres, every embedded look gives its track an
    opinion and the track's shown gender and age are the fused ones; --no-second-opinion
    (or dlib, which tells neither) leaves the model's alone."""
    from realtime.pipeline import Analyzer, AnalyzerSettings

    def run(**reid):
        with Analyzer(AnalyzerSettings(backend="onnxruntime", reid=ReidSettings(model=faceres, **reid))) as analyzer:
            for _ in analyzer.stream(shared_path(*STAGE)):
                pass
            analyzer.reid._apply(0, analyzer.tracker(0))  # the last frame's looks
            return analyzer.reid, list(analyzer.tracker(0).tracks)

    reid, tracks = run()
    looked = [t for t in tracks if t.opinions]
    assert reid.opinions > 0 and looked
    for t in looked:
        gender, age, years = fuse(t.gender_sum / t.weight, t.age_sum / t.weight, t.years_sum / t.weight, t.opinion.mean())
        assert np.allclose(t.gender_probs, gender, atol=1e-6) and np.allclose(t.age_probs, age, atol=1e-6)
        assert t.age_years == pytest.approx(float(years), abs=1e-4)
    moved = [float(np.abs(t.gender_probs - t.gender_sum / t.weight).max()) for t in looked]
    assert max(moved) > 0.01, moved  # faceres does not just echo the model
    assert max(abs(t.age_years - t.years_sum / t.weight) for t in looked) > 0.5
    reid, tracks = run(second_opinion=False)
    assert reid.embeddings > 0 and reid.opinions == 0 and not any(t.opinions for t in tracks)


@pytest.mark.slow
def test_eval_second_opinion_scores_the_fused_answer(faceres, detector_models, tmp_path):
    """`realtime eval --second-opinion`: each photo's age is the model's, as the same
    eval with --no-second-opinion writes, fused half and half with faceres' own on the
    same detected face (computed here apart), and so is its P(male) (faceres' re-centred)
    where that fused age is 13 or more; the JSON reports faceres alone."""
    from realtime.embedders import FaceresEmbedder
    from tests.helpers import subset_set

    faces = lfw_faces(24, seed=1)
    lfw = shared_path(*LFW)
    rows = [r for r in csv.DictReader((lfw / "labels.csv").open())]
    keep = {str(Path(p).relative_to(lfw)) for p, *_ in faces}
    subset_set(lfw, tmp_path / "set", [r for r in rows if r["file"] in keep])

    def p_male(name):
        args = ["eval", "--data", str(tmp_path / "set"), "--format", "csv", "--bootstrap", "0",
                "--predictions", str(tmp_path / f"{name}.csv"), "--json", str(tmp_path / f"{name}.json")]
        code, _, err = run_cli(*args, *(["--second-opinion", "--faceres", str(faceres)] if name == "fused" else ["--no-second-opinion"]))
        assert code == 0, err
        rows = list(csv.DictReader((tmp_path / f"{name}.csv").open()))
        return ({r["file"]: float(r["gender_prob"]) if r["gender"] == "male" else 1 - float(r["gender_prob"]) for r in rows},
                {r["file"]: float(r["age"]) for r in rows})

    (ours, years), (fused, fused_years) = p_male("ours"), p_male("fused")
    net = FaceresEmbedder(faceres)
    for path, image, box, _ in faces:
        name = str(Path(path).relative_to(lfw))
        _, male, age = net.look(image, box[None])
        their_years = float(age[0] @ np.arange(1, 101))
        assert fused_years[name] == pytest.approx(0.5 * years[name] + 0.5 * their_years, abs=0.08)
        theirs = platt(male, *FACERES_PLATT)[0]
        expected = 0.5 * ours[name] + 0.5 * theirs if fused_years[name] >= 13 else ours[name]
        assert fused[name] == pytest.approx(expected, abs=2e-4)
    report = json.loads((tmp_path / "fused.json").read_text())["second_opinion"]
    assert report["platt"] == list(FACERES_PLATT) and 0.5 < report["faceres_alone"]["gender_acc"] <= 1


def test_second_opinion_needs_its_network_one_line(tmp_path, detector_models, monkeypatch):
    """No faceres to be found, or a --faceres that is not there: one line, nothing written."""
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "labels.csv").write_text("file,age,gender\n")
    monkeypatch.setenv("REALTIME_MODELS", str(tmp_path))  # no faceres there, nor in the cache
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path / "cache"))
    base = ["eval", "--data", str(tmp_path / "set"), "--format", "csv", "--predictions", str(tmp_path / "p.csv"), "--second-opinion"]
    code, _, err = run_cli(*base)
    assert code != 0
    one_line(err, "--second-opinion needs hse_faceres.onnx")
    code, _, err = run_cli(*base, "--faceres", str(tmp_path / "nope.onnx"))
    assert code != 0
    one_line(err, "nope.onnx: no such file")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_a_photos_faces_all_take_the_opinion(faceres, detector_models):
    """Photos are not tracked: every face of one gets faceres' opinion fused in (the
    model's alone with --no-second-opinion or --no-reid)."""
    import cv2

    from realtime.embedders import FaceresEmbedder
    from realtime.pipeline import Analyzer, AnalyzerSettings
    from tests.helpers import SAMPLES

    image = cv2.imread(str(SAMPLES / "people.jpg"))

    def faces(**reid):
        with Analyzer(AnalyzerSettings(backend="onnxruntime", track=False, reid=ReidSettings(model=faceres, **reid))) as a:
            return a(image), a.meta

    fused, meta = faces()
    alone, _ = faces(second_opinion=False)
    assert np.allclose(faces(enabled=False)[0].gender_probs, alone.gender_probs)  # --no-reid: faceres never runs
    assert len(fused) >= 2 and np.allclose(fused.boxes, alone.boxes)
    _, male, age = FaceresEmbedder(faceres).look(image, fused.boxes)
    gender, age, years = fuse(alone.gender_probs, alone.age_probs, alone.age_years, looks(male, age, meta.gender_labels, meta.age_labels))
    assert np.allclose(fused.gender_probs, gender, atol=1e-5) and np.allclose(fused.age_probs, age, atol=1e-5)
    assert np.allclose(fused.age_years, years, atol=1e-3)
    assert not np.allclose(fused.gender_probs, alone.gender_probs, atol=1e-3)


@pytest.mark.slow
def test_eval_follows_the_app_faceres_found_or_not(faceres, detector_models, tmp_path, monkeypatch):
    """`realtime eval` with no flag scores what the app shows: the second opinion when
    faceres is in the model cache (as `realtime models fetch` puts it), the network alone
    with --no-second-opinion or when no faceres is found; it says which."""
    import os

    from tests.helpers import subset_set

    lfw = shared_path(*LFW)
    rows = [r for r in csv.DictReader((lfw / "labels.csv").open())][:12]
    subset_set(lfw, tmp_path / "set", rows)
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(faceres, cache / "models" / "hse_faceres.onnx")
    monkeypatch.setenv("REALTIME_CACHE", str(cache))

    def scored(*flags):
        code, out, err = run_cli("eval", "--data", tmp_path / "set", "--format", "csv", "--bootstrap", "0",
                                 "--predictions", tmp_path / "p.csv", "--json", tmp_path / "m.json", *flags)
        assert code == 0, err
        line = next(x for x in out.splitlines() if x.startswith("scored: "))
        return "second_opinion" in json.loads((tmp_path / "m.json").read_text()), line

    found, line = scored()
    assert found and "with faceres' second opinion" in line
    found, line = scored("--no-second-opinion")
    assert not found and line == "scored: the model alone"
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path / "empty"))
    found, line = scored()
    assert not found and line == "scored: the model alone"
