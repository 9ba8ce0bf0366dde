"""Issue 17: several sets at once (age loss masked where a set has no ages, balanced
drawing, each set split by its key), age label schemes, and calibrated probabilities
with `?` for unsure genders; on real UTKFace and LFW faces from ../shared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines.meta import AGE_LABELS, ModelMeta
from tests.helpers import SAMPLES, invoke, shared_path, tiny
from train.ages import AgeScheme, parse_scheme, relabel
from train.data import holdout_mask
from train.formats import load_sets
from train.labels import age_group_of


@pytest.fixture(scope="module")
def two_sets():
    """UTKFace and LFW labels read as one set (no pixels)."""
    utk, lfw = shared_path("data", "utkface"), shared_path("data", "lfw")
    return (utk, "utkface"), (lfw, "csv")


@pytest.fixture(scope="module")
def both(two_sets):
    """The two sets read once for the tests that only read them (labels, no pixels)."""
    return load_sets(two_sets)


@pytest.fixture(scope="module")
def five_year_model(tmp_path_factory, two_sets):
    """A real two-set training run (60 faces of each set, 1 epoch, 32 px) with the 5y scheme."""
    out = tmp_path_factory.mktemp("wild")
    (utk, _), (lfw, _) = two_sets
    result = invoke("train", "--data", utk, "--format", "utkface", "--data", lfw, "--format", "csv", "--limit", 60,
                    "--folds", 1, "--holdout", 0.3, "--epochs", 1, "--input-size", 32, "--batch-size", 16,
                    "--threads", 1, "--age-groups", "5y", "--out", out)
    assert result.exit_code == 0, result.output
    return out


# ----------------------------------------------------------------------------- schemes
def test_schemes_parse_and_bin_ages():
    five = parse_scheme("5y")
    assert len(five) == 20 and five.labels[:2] == ("0-4", "5-9") and five.labels[-1] == "95+"
    assert five.group_of(np.array([0, 4, 5, 94.4, 95, 116, np.nan])).tolist() == [0, 0, 1, 18, 19, 19, -1]
    assert parse_scheme("13,20,60").labels == ("0-12", "13-19", "20-59", "60+")
    assert parse_scheme("adience").labels == AGE_LABELS
    for bad in ("20,13", "0,5", "x", "5,500"):
        with pytest.raises(Exception, match="age-groups"):
            parse_scheme(bad)


def test_adience_relabel_is_todays_mapping(both):
    """Relabelling into adience changes no UTKFace label (the default stays as it was)."""
    data = both[both.source == 0]
    again = relabel(data.age_group, data.age_years, AgeScheme.from_labels(AGE_LABELS))
    assert (again == data.age_group).all()
    assert (data.age_group == np.array([age_group_of(a) for a in data.age_years])).all()


# ----------------------------------------------------------------------------- two sets
@pytest.mark.slow  # hashes the bytes of all 35k images (about 15 s)
def test_two_sets_keep_their_labels_and_split_by_their_key(both, two_sets):
    data = both
    lfw = data.source == 1
    assert lfw.sum() == 13225 and (~lfw).sum() == 21716
    assert (data.age_group[lfw] == -1).all() and np.isnan(data.age_years[lfw]).all()  # LFW has no ages
    held = holdout_mask(data, 0.15)
    for k in (0, 1):  # a capture (UTKFace) or a person (LFW) is on one side only
        keys = data.groups[data.source == k]
        side = held[data.source == k]
        assert not set(keys[side]) & set(keys[~side])
        assert 0.12 < side.mean() < 0.18
        alone = holdout_mask(load_sets(two_sets[k : k + 1]), 0.15)  # the split `eval --holdout` makes of the set alone
        assert (alone == side).all()


def test_age_loss_masked_on_lfw_rows(both):
    """On real crops of both sets: LFW rows add nothing to the age and years losses (and
    no gradient to the age head); a mixed batch's age loss is its UTKFace rows' alone."""
    from train.losses import MaskedLoss
    from train.trainer import build_net
    from train.data import read_images

    data = both
    pick = np.concatenate([np.flatnonzero(data.source == 0)[:8], np.flatnonzero(data.source == 1)[:8]])
    labels, images = read_images(data[pick], 32)
    torch.manual_seed(0)
    net = build_net(ModelMeta(input_size=32))
    x = torch.from_numpy(images[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255)
    targets = [torch.from_numpy(a) for a in (labels.age_group, labels.age_years, labels.gender)]
    loss_fn = MaskedLoss(label_smoothing=0.1, years_weight=0.1)
    net.eval()  # the same outputs for every call below (no dropout, fixed batch norm)
    outputs = net(x, years_logits=True)
    lfw = torch.from_numpy(labels.source == 1)
    _, mixed = loss_fn(outputs, *targets)
    _, utk_only = loss_fn(tuple(o[~lfw] if o is not None else None for o in outputs), *(t[~lfw] for t in targets))
    assert mixed["age"] == pytest.approx(utk_only["age"], rel=1e-5)
    assert mixed["years"] == pytest.approx(utk_only["years"], rel=1e-5)
    loss, lfw_only = loss_fn(tuple(o[lfw] if o is not None else None for o in outputs), *(t[lfw] for t in targets))
    assert lfw_only["age"] == 0.0 and lfw_only["years"] == 0.0 and lfw_only["gender"] > 0  # LFW's genders count
    net.zero_grad()
    loss.backward()
    assert float(net.age_head.weight.grad.abs().max()) == 0.0
    assert float(net.gender_head.weight.grad.abs().max()) > 0.0


def test_balanced_sampler_evens_genders_and_races(both):
    from train.sampling import BalancedSampler, balance_weights

    data = both
    sampler = BalancedSampler(balance_weights(data), seed=0)
    drawn = data[np.array(list(sampler))]
    female = drawn.gender == 0
    assert (data.gender[data.source == 1] == 0).mean() < 0.25  # LFW as it is: 22% women
    for k in (0, 1):
        assert abs(female[drawn.source == k].mean() - 0.5) < 0.02
    utk_race = np.bincount(drawn.race[drawn.source == 0], minlength=5) / (drawn.source == 0).sum()
    assert np.abs(utk_race - 0.2).max() < 0.02
    assert abs((drawn.source == 1).mean() - (data.source == 1).mean()) < 0.02  # each set keeps its share
    sampler.set_epoch(1)
    assert list(sampler)[:50] != list(BalancedSampler(balance_weights(data), seed=0))[:50]


def test_balancing_genders_only_keeps_utkface_races_as_they_come(both):
    from train.sampling import BalancedSampler, balance_weights

    data = both
    drawn = data[np.array(list(BalancedSampler(balance_weights(data, race=False), seed=0)))]
    for k in (0, 1):
        assert abs((drawn.gender[drawn.source == k] == 0).mean() - 0.5) < 0.02
    utk = data.source == 0
    natural = np.bincount(data.race[utk], minlength=5) / utk.sum()
    assert natural.max() > 0.35  # UTKFace as it is: mostly White
    drawn_race = np.bincount(drawn.race[drawn.source == 0], minlength=5) / (drawn.source == 0).sum()
    assert np.abs(drawn_race - natural).max() < 0.03


@pytest.mark.slow  # trains a model (about 30 s on 2 cores)
def test_two_set_training_run(five_year_model):
    settings = json.loads((five_year_model / "settings.json").read_text())
    assert settings["balance"] is None and len(settings["data"]) == 2 and settings["age_groups"] == "5y"
    from engines.files import read_checkpoint_meta

    meta = read_checkpoint_meta(five_year_model / "fold_0" / "final.safetensors")
    assert meta.age_labels == parse_scheme("5y").labels and "utkface" in meta.trained_on and "csv" in meta.trained_on


# ----------------------------------------------------------------------------- 5y everywhere
@pytest.mark.slow  # trains a model (about 30 s on 2 cores)
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_five_year_labels_in_jsonl_and_overlay(five_year_model, backend, tmp_path):
    from realtime.analyzer import Analyzer, AnalyzerSettings
    from realtime.annotators import LabelAnnotator
    from realtime.sources import open_source

    model = five_year_model / "fold_0" / "final.safetensors"
    labels = parse_scheme("5y").labels
    jsonl = tmp_path / "r.jsonl"
    result = invoke("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", "--json", jsonl, "--model", model, "--backend", backend)
    assert result.exit_code == 0, result.output
    faces = [f for line in jsonl.read_text().splitlines() for f in json.loads(line)["faces"]]
    assert faces and all(f["age_group"] in labels and len(f["age_probs"]) == 20 for f in faces)
    with Analyzer(AnalyzerSettings(model=model, backend=backend, track=False)) as analyzer:
        frame = next(iter(open_source(str(SAMPLES / "people.jpg"))))
        found = analyzer.analyze([(0, frame)])[0]
        texts = [LabelAnnotator(analyzer.meta).label(found, i) for i in range(len(found))]
    assert texts and all(t.split()[0] in labels for t in texts)


# ----------------------------------------------------------------------------- calibration
@pytest.mark.slow  # 600 real chips through the model
def test_temperature_lowers_ece_on_real_validation():
    """The default model on 600 UTKFace held-out chips: a temperature fitted on one half
    lowers the gender calibration error on the other half."""
    from train.calibration import expected_calibration_error, fit_temperature
    from engines.calibration import scale
    from train.evaluate import EvalSettings, run_model

    raw, _, _ = run_model(EvalSettings(data=shared_path("data", "utkface"), format="utkface", cropped=True, holdout=0.15, limit=600))
    g, truth = raw.gender_probs, raw.labels.gender
    fit, test = slice(0, 300), slice(300, 600)
    t = fit_temperature(g[fit], truth[fit])
    before, after = expected_calibration_error(g[test], truth[test]), expected_calibration_error(scale(g[test], t), truth[test])
    assert after < before
    assert (scale(g, t).argmax(1) == g.argmax(1)).all()  # no prediction changes


@pytest.mark.slow  # trains a model (about 30 s on 2 cores)
def test_calibrate_writes_a_model_every_engine_applies(five_year_model, tmp_path):
    from engines.files import read_checkpoint_meta
    from engines.registry import create_engine

    model = five_year_model / "fold_0" / "final.safetensors"
    out = tmp_path / "cal.safetensors"
    report_path = tmp_path / "cal.json"
    result = invoke("calibrate", model, "--data", shared_path("data", "lfw"), "--format", "csv", "--cropped",
                    "--limit", 200, "-o", out, "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    meta = read_checkpoint_meta(out)
    assert meta.temperature == (report["temperature"]["age"], report["temperature"]["gender"]) != (1.0, 1.0)
    assert meta.min_gender_confidence == report["min_gender_confidence"]
    assert report["ece_after"]["gender"] <= report["ece_before"]["gender"]
    crops = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    for backend in ("torch", "onnxruntime"):
        plain, calibrated = create_engine(model, backend), create_engine(out, backend)
        raw, cal = plain.infer(crops), calibrated.infer(crops)
        assert np.allclose(calibrated.infer_raw(crops).gender_probs, raw.gender_probs, atol=1e-5)  # same weights
        assert (cal.gender_probs.argmax(1) == raw.gender_probs.argmax(1)).all()
        assert not np.allclose(cal.gender_probs, raw.gender_probs, atol=1e-4)
    # refuses to overwrite its input
    assert invoke("calibrate", out, "--data", shared_path("data", "lfw"), "--format", "csv", "--cropped", "-o", out).exit_code != 0


def test_unsure_gender_is_a_question_mark(tmp_path):
    """At a threshold above every probability, the overlay shows `?` and the JSONL keeps
    gender and gender_prob and marks gender_unsure; at 0 nothing is unsure."""
    for threshold, unsure in ((1.0, True), (0.0, False)):
        jsonl = tmp_path / f"r{threshold}.jsonl"
        result = invoke("annotate", SAMPLES / "people.jpg", "-o", tmp_path / "o.jpg", "--json", jsonl,
                        "--min-gender-confidence", threshold)
        assert result.exit_code == 0, result.output
        faces = [f for line in jsonl.read_text().splitlines() for f in json.loads(line)["faces"]]
        assert faces and all(f.get("gender_unsure", False) is unsure and f["gender"] in ("female", "male") for f in faces)
    from realtime.annotators import LabelAnnotator, face_colors
    from realtime.faces import Faces

    faces = Faces(boxes=np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32), scores=np.ones(2, np.float32))
    faces = faces.with_predictions(np.full((2, 8), 1 / 8, np.float32), np.array([[0.62, 0.38], [0.01, 0.99]], np.float32), np.full(2, 30, np.float32))
    meta = ModelMeta(min_gender_confidence=0.8)
    texts = [LabelAnnotator(meta).label(faces, i) for i in range(2)]
    assert texts[0].split()[1] == "?" and texts[1].split()[1] == "male"
    colors = face_colors(faces, meta)
    assert colors[0] != colors[1]


def test_calibrate_writes_the_level_eyes_it_was_asked_for(tmp_path):
    """`calibrate --level-eyes/--no-level-eyes` fits with that preprocessing and writes it into
    the copy's meta (what ship.sh did with a Python one-liner); without it the model's own stays."""
    from engines.files import DEFAULT_WEIGHTS, read_checkpoint_meta

    model = DEFAULT_WEIGHTS
    own = read_checkpoint_meta(model).level_eyes
    for flag, expected in (("--level-eyes", True), ("--no-level-eyes", False), (None, own)):
        out = tmp_path / f"{flag}.safetensors"
        result = invoke("calibrate", model, "--data", shared_path("data", "lfw"), "--format", "csv", "--limit", 40,
                        "-o", out, *([flag] if flag else []))
        assert result.exit_code == 0, result.output
        assert read_checkpoint_meta(out).level_eyes is expected
