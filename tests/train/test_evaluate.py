import csv
import json

import cv2

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engines.meta import AGE_LABELS, ModelMeta
from engines.model import create_model, save_checkpoint
from realtime.errors import RealtimeError
from realtime.cli.training import eval_command
from train.labels import age_group_of
from train.evaluate import EvalSettings, evaluate


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    net = create_model(meta=ModelMeta(input_size=64)).eval()
    return save_checkpoint(net, tmp_path / "model.safetensors")


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # the whole eval command with bootstrap intervals
def test_eval_cropped_cli_on_real_faces(shared_faces, checkpoint, tmp_path):
    pred, out_json = tmp_path / "pred.csv", tmp_path / "m.json"
    args = ["--data", str(shared_faces), "--format", "utkface", "--cropped", "--model", str(checkpoint),
            "--backend", "torch", "--predictions", str(pred), "--json", str(out_json), "--bootstrap", "50"]  # fmt: skip
    result = CliRunner().invoke(eval_command, args)
    assert result.exit_code == 0, result.output
    assert "age group exact" in result.output and "MFLOPs" in result.output
    rows = read_rows(pred)
    assert list(rows[0]) == ["file", "age_group", "age", "gender", "gender_prob"] and len(rows) == 12
    assert all(r["age_group"] in AGE_LABELS and r["gender"] in ("female", "male") and 0.5 <= float(r["gender_prob"]) <= 1 for r in rows)
    m = json.loads(out_json.read_text())
    # the JSON's metrics agree with the CSV and the labels
    with open(shared_faces / "labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    exact = np.mean([AGE_LABELS[age_group_of(float(lab["age"]))] == r["age_group"] for lab, r in zip(labels, rows)])
    gender = np.mean([lab["gender"] == r["gender"] for lab, r in zip(labels, rows)])
    mae = np.mean([abs(float(lab["age"]) - float(r["age"])) for lab, r in zip(labels, rows)])
    assert m["overall"]["age_exact"] == pytest.approx(exact, abs=1e-4)
    assert m["overall"]["gender_acc"] == pytest.approx(gender, abs=1e-4)
    assert m["overall"]["mae"] == pytest.approx(mae, abs=0.06)  # CSV rounds to 0.1 year
    assert m["images"] == 12 and m["backend"] == "torch+flip" and m["no_face"] == 0
    assert sum(v["n"] for v in m["by_age_group"].values()) == 12 and set(m["by_race"]) == {"White", "Black", "Asian", "Indian", "Others"}
    assert sum(map(sum, m["age_confusion"])) == 12
    size = m["model_size"]
    assert size["parameters"] == sum(p.numel() for p in create_model(meta=ModelMeta(input_size=64)).parameters())
    assert size["flops"] > 1e6 and size["input_size"] == 64


@pytest.mark.slow  # three evaluations through the detector
def test_eval_with_detector_finds_faces(shared_faces, checkpoint, tmp_path):
    pytest.importorskip("mediapipe")
    try:
        from realtime.detector import FaceDetector  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the app's detector is not importable yet: {e}")
    common = dict(model=checkpoint, backend="torch", bootstrap=0)
    # Taken as they are, tight aligned chips often defeat the detector (it looks for a
    # face inside a scene): those images fall back to the whole chip and are counted.
    bare = evaluate(EvalSettings(shared_faces, "utkface", tmp_path / "bare.csv", **common))
    whole = evaluate(EvalSettings(shared_faces, "utkface", tmp_path / "whole.csv", cropped=True, **common))
    assert bare["images"] == 12 and 0 <= bare["no_face"] < 12 and bare["context"] == 1.0
    assert len(read_rows(tmp_path / "bare.csv")) == 12
    # Set in a frame twice their side, as a face sits in a photo, the detector finds every
    # one of these faces (all 12 measured), and its crops are not the whole chip.
    framed = evaluate(EvalSettings(shared_faces, "utkface", tmp_path / "framed.csv", context=2.0, **common))
    assert framed["no_face"] == 0 and framed["images"] == 12
    probs = [[float(r["gender_prob"]) for r in read_rows(tmp_path / f"{n}.csv")] for n in ("whole", "framed")]
    assert not np.allclose(*probs, atol=1e-6)
    with pytest.raises(RealtimeError, match="--context"):
        EvalSettings(shared_faces, "utkface", tmp_path / "p.csv", context=0.5)


def test_eval_user_errors(tmp_path, checkpoint):
    with pytest.raises(RealtimeError, match="not found"):
        evaluate(EvalSettings(tmp_path / "nope", "utkface", tmp_path / "p.csv", model=checkpoint, cropped=True))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "labels.csv").write_text("file,age,gender\na.png,30,male\n")
    with pytest.raises(RealtimeError, match="model file not found"):
        evaluate(EvalSettings(tmp_path, "csv", tmp_path / "p.csv", model=tmp_path / "missing.safetensors", cropped=True))
    (tmp_path / "labels.csv").write_text("file,age,gender\nb.png,30,male\n")
    with pytest.raises(RealtimeError, match="no labelled images"):
        evaluate(EvalSettings(tmp_path, "csv", tmp_path / "p.csv", model=checkpoint, cropped=True))


def test_eval_names_the_detector_option_as_the_app_does():
    from realtime.cli import cli

    help_text = CliRunner().invoke(cli, ["eval", "--help"]).output
    assert "--detector-range [full|short]" in help_text and "--range" not in help_text.replace("--detector-range", "")
