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
from realtime.opinion import FACERES_PLATT, fuse, gender_opinion, supported
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


def test_the_opinion_is_in_the_models_label_order():
    """Columns follow the model's labels, rows sum to 1; labels other than female/male take no opinion."""
    raw = np.array([0.2, 0.7, 0.99], np.float32)
    fm, mf = gender_opinion(raw, ("female", "male")), gender_opinion(raw, ("male", "female"))
    assert fm.shape == (3, 2) and np.allclose(fm.sum(1), 1) and np.allclose(fm, mf[:, ::-1])
    assert np.allclose(fm[:, 1], platt(raw, *FACERES_PLATT))
    assert supported(("male", "female")) and not supported(("f", "m"))


def test_an_opinion_moves_a_tracks_gender_and_stays_with_its_person():
    """A track the model calls female at 0.6 becomes male when faceres says male at 0.9
    (fused 0.35 / 0.65); one the model calls male at 0.8 becomes female when faceres says
    female at 0.95 (fused 0.575: the opinion is not held back by the hysteresis, later
    frames are); the person keeps the opinion for their next track, which starts from it."""
    track = Track(1, np.zeros(4, np.float32), 0, 0)
    track.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.6, 0.4], np.float32), 30.0, 1.0, 0.8, 0, 0.15)
    assert track.gender_class == 0
    track.add_opinion(np.array([0.1, 0.9], np.float32))
    assert track.gender_probs == pytest.approx([0.35, 0.65]) and track.gender_class == 1
    g, face = Gallery(0.6, ReidSettings()), np.ones(8, np.float32) / np.sqrt(8)
    g.update(0, track, face, 0.0)
    g.release((0, 1), track)
    nxt = Track(2, np.zeros(4, np.float32), 5, 5)
    nxt.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.6, 0.4], np.float32), 30.0, 1.0, 0.8, 5, 0.15)
    g.update(0, nxt, face, 1.0)
    assert nxt.opinions == 1 and nxt.gender_probs == pytest.approx(fuse([0.6, 0.4], [0.1, 0.9], 30.0))
    close = Track(4, np.zeros(4, np.float32), 0, 0)
    close.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.2, 0.8], np.float32), 80.0, 1.0, 0.8, 0, 0.15)
    close.add_opinion(np.array([0.95, 0.05], np.float32))
    assert close.gender_probs == pytest.approx([0.575, 0.425]) and close.gender_class == 0
    for frame in (1, 2, 3):  # later frames all male: the fused answer leans male, by less than the hysteresis
        close.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.0, 1.0], np.float32), 80.0, 1.0, 0.8, frame, 0.15)
    assert 0.425 < close.gender_probs[0] < 0.5 and close.gender_class == 0
    child = Track(3, np.zeros(4, np.float32), 0, 0)  # faceres is near chance on children: the model's stands
    child.add_prediction(np.array([1.0, 0.0], np.float32), np.array([0.6, 0.4], np.float32), 8.0, 1.0, 0.8, 0, 0.15)
    child.add_opinion(np.array([0.1, 0.9], np.float32))
    assert child.gender_probs == pytest.approx([0.6, 0.4]) and child.gender_class == 0


@pytest.mark.slow
def test_faceres_looks_once_for_identity_and_gender(faceres, detector_models):
    """``look`` is one run: the same vectors as ``embed``, and the gender teach's faceres
    gives on the same 1.5x view. Re-centred, its answers are more balanced between
    women and men on LFW photos than raw (faceres says "male" too readily in the wild)."""
    from engines.crops import warp_square
    from realtime.embedders import FaceresEmbedder
    from train.teach import _Faceres

    net, teacher = FaceresEmbedder(faceres), _Faceres(faceres, 1)
    faces = lfw_faces(120)
    male, truth = [], []
    for _, image, box, gender in faces:
        vectors, p = net.look(image, box[None])
        assert np.allclose(vectors, net.embed(image, box[None]), atol=1e-6)
        (x1, y1, x2, y2), side = box, max(box[2] - box[0], box[3] - box[1]) * 1.5
        view = warp_square(image, (x1 + x2) / 2, (y1 + y2) / 2, side, 224)
        assert p[0] == pytest.approx(teacher(view[None])[0][0], abs=1e-5)
        male.append(p[0])
        truth.append(gender)
    male, truth = np.array(male), np.array(truth)
    gap = lambda p: abs((p[truth == 0] < 0.5).mean() - (p[truth == 1] >= 0.5).mean())  # noqa: E731
    assert len(male) >= 100 and gap(platt(male, *FACERES_PLATT)) < gap(male)


@pytest.mark.slow
def test_tracks_take_faceres_opinion_on_the_stage_clip(faceres, detector_models):
    """With re-identification on faceres, every embedded look gives its track an
    opinion and the track's shown gender is the fused one; --no-second-opinion (or
    dlib, which tells no gender) leaves the model's alone."""
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
        ours = t.gender_sum / t.weight
        assert np.allclose(t.gender_probs, fuse(ours, t.opinion_sum / t.opinions, t.age_years), atol=1e-6)
    moved = [float(np.abs(t.gender_probs - t.gender_sum / t.weight).max()) for t in looked]
    assert max(moved) > 0.01, moved  # faceres does not just echo the model
    reid, tracks = run(second_opinion=False)
    assert reid.embeddings > 0 and reid.opinions == 0 and not any(t.opinions for t in tracks)


@pytest.mark.slow
def test_eval_second_opinion_scores_the_fused_gender(faceres, detector_models, tmp_path):
    """`realtime eval --second-opinion`: each photo's P(male) is the model's, as the
    same eval without it writes, fused half and half with faceres' re-centred own on
    the same detected face (computed here apart) where the model's age is 13 or more;
    the JSON reports faceres alone."""
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
        code, _, err = run_cli(*args, *(["--second-opinion", "--faceres", str(faceres)] if name == "fused" else []))
        assert code == 0, err
        rows = list(csv.DictReader((tmp_path / f"{name}.csv").open()))
        return ({r["file"]: float(r["gender_prob"]) if r["gender"] == "male" else 1 - float(r["gender_prob"]) for r in rows},
                {r["file"]: float(r["age"]) for r in rows})

    (ours, years), (fused, _) = p_male("ours"), p_male("fused")
    net = FaceresEmbedder(faceres)
    for path, image, box, _ in faces:
        name = str(Path(path).relative_to(lfw))
        theirs = platt(net.look(image, box[None])[1], *FACERES_PLATT)[0]
        expected = 0.5 * ours[name] + 0.5 * theirs if years[name] >= 13 else ours[name]
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
    model's alone with --no-second-opinion, or when faceres is not the identity model)."""
    import cv2

    from realtime.embedders import FaceresEmbedder
    from realtime.pipeline import Analyzer, AnalyzerSettings
    from tests.helpers import SAMPLES

    image = cv2.imread(str(SAMPLES / "people.jpg"))

    def faces(**reid):
        with Analyzer(AnalyzerSettings(backend="onnxruntime", track=False, reid=ReidSettings(model=faceres, **reid))) as a:
            return a(image), a.meta.gender_labels

    fused, labels = faces()
    alone, _ = faces(second_opinion=False)
    assert len(fused) >= 2 and np.allclose(fused.boxes, alone.boxes)
    theirs = gender_opinion(FaceresEmbedder(faceres).look(image, fused.boxes)[1], labels)
    assert np.allclose(fused.gender_probs, fuse(alone.gender_probs, theirs, alone.age_years), atol=1e-5)
    assert not np.allclose(fused.gender_probs, alone.gender_probs, atol=1e-3)


@pytest.mark.slow
def test_eval_follows_the_app_faceres_found_or_not(faceres, detector_models, tmp_path, monkeypatch):
    """`realtime eval` with no flag scores what the app shows: the second opinion when
    faceres is in the model cache (as `realtime models fetch` puts it), the network alone
    with --no-second-opinion or when no faceres is found; it says which on its gender line."""
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
        line = next(x for x in out.splitlines() if x.startswith("gender "))
        return "second_opinion" in json.loads((tmp_path / "m.json").read_text()), line

    found, line = scored()
    assert found and "with faceres' second opinion" in line
    found, line = scored("--no-second-opinion")
    assert not found and "the model alone" in line
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path / "empty"))
    found, line = scored()
    assert not found and "the model alone" in line
