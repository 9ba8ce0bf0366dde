"""The rotated copy of a held-out set (train.rotated) and levelled crops in `realtime eval`."""

import csv
import dataclasses
import shutil

import cv2
import numpy as np
import pytest

from engines.files import DEFAULT_WEIGHTS, read_checkpoint_meta
from engines.model import load_checkpoint, save_checkpoint
from realtime.analyzer import Analyzer, AnalyzerSettings
from train.formats import load_dataset
from train.evaluate import EvalSettings, run_model
from train.rotated import main, write_rotated
from tests.helpers import run_cli, shared_path


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    """24 real UTKFace chips with their labels.csv rows."""
    src = shared_path("data", "utkface")
    root = tmp_path_factory.mktemp("utk")
    with (src / "labels.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for k, r in enumerate(reader) if k % 900 == 0][:24]
    for r in rows:
        (root / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / r["file"], root / r["file"])
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, reader.fieldnames)
        w.writeheader()
        w.writerows(rows)
    return root


def test_the_rotated_copy_keeps_labels_and_split_and_turns_each_image(chips, tmp_path):
    dst = tmp_path / "rot"
    n = write_rotated(chips, dst, holdout=0.99, max_angle=30, seed=3)
    src, out = load_dataset(chips, "utkface"), load_dataset(dst, "utkface")
    assert 20 <= n == len(out) <= len(src)
    by_name = {f.name: k for k, f in enumerate(src.files)}
    k = np.array([by_name[f.name] for f in out.files])
    assert np.array_equal(out.age_years, src.age_years[k]) and np.array_equal(out.gender, src.gender[k])
    assert list(out.split_keys()) == [src.split_keys()[i] for i in k]
    with (dst / "angles.csv").open() as fh:
        angles = np.array([float(r["angle"]) for r in csv.DictReader(fh)])
    assert len(angles) == n and np.abs(angles).max() <= 30 and angles.std() > 5
    image, original = cv2.imread(str(out.files[0])), cv2.imread(str(src.files[k[0]]))
    assert image.shape == (2 * original.shape[0], 2 * original.shape[1], 3)  # set in a frame twice its size
    assert write_rotated(chips, tmp_path / "again", holdout=0.99, seed=3) == n
    assert (tmp_path / "again" / "angles.csv").read_text() == (dst / "angles.csv").read_text()  # seeded


def test_the_tool_refuses_a_used_folder_and_a_set_without_labels(chips, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("mine")
    assert main([str(chips), str(tmp_path / "used")]) == 1
    assert (tmp_path / "used" / "x.txt").read_text() == "mine"
    assert main([str(tmp_path / "used"), str(tmp_path / "new")]) == 1
    assert "no labels.csv" in capsys.readouterr().err


def test_eval_levels_crops_when_asked_or_when_the_model_says(chips, tmp_path, detector_models):
    """--level-eyes changes what the model sees on turned faces; a model whose meta
    says level_eyes is levelled by default, and --no-level-eyes turns it off."""
    dst = tmp_path / "rot"
    write_rotated(chips, dst, holdout=0.99, max_angle=30, seed=1)
    plain_model = tmp_path / "plain.safetensors"
    meta = dataclasses.replace(read_checkpoint_meta(DEFAULT_WEIGHTS), level_eyes=False)
    save_checkpoint(load_checkpoint(DEFAULT_WEIGHTS), plain_model, meta=meta)
    base = EvalSettings(data=dst, format="utkface", bootstrap=0, backend="auto", flip=False, model=plain_model)
    plain, _, counts = run_model(base)
    level, _, _ = run_model(dataclasses.replace(base, level_eyes=True))
    assert counts["no_face"] < len(plain.gender_probs) / 2
    assert not np.allclose(plain.gender_probs, level.gender_probs)

    levelled_model = tmp_path / "levelled.safetensors"
    save_checkpoint(load_checkpoint(plain_model), levelled_model, meta=dataclasses.replace(meta, level_eyes=True))
    assert read_checkpoint_meta(levelled_model).level_eyes is True
    model = dataclasses.replace(base, model=levelled_model)
    by_meta, engine, _ = run_model(model)
    assert engine.meta.level_eyes is True
    np.testing.assert_allclose(by_meta.gender_probs, level.gender_probs, atol=1e-4)
    off, _, _ = run_model(dataclasses.replace(model, level_eyes=False))
    np.testing.assert_allclose(off.gender_probs, plain.gender_probs, atol=1e-4)
    with Analyzer(AnalyzerSettings(model=levelled_model, level_eyes=False)) as a:
        assert a.cropper.level_eyes is False


@pytest.mark.slow  # three CLI runs through the detector (about 5 s); test_eval_levels_crops_when_asked_or_when_the_model_says stays quick
def test_the_level_eyes_options_reach_eval_and_the_app(chips, tmp_path, detector_models):
    dst = tmp_path / "rot"
    write_rotated(chips, dst, holdout=0.99, seed=2)
    code, out, err = run_cli("eval", "--data", str(dst), "--format", "utkface", "--level-eyes", "--limit", "4",
                             "--bootstrap", "0", "--predictions", str(tmp_path / "p.csv"))
    assert code == 0, err
    assert "4 images" in out and len((tmp_path / "p.csv").read_text().splitlines()) == 5
    for command in ("run", "annotate"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "--level-eyes / --no-level-eyes" in out
