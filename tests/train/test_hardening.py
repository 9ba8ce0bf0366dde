"""Issue 18, part A, for the commands that train, score and convert models: none
overwrites its inputs, none runs or writes a model whose numbers are NaN, and a bad
option or label file is one line before any work. Real `realtime` processes on small
real files."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
from pathlib import Path

import cv2
import pytest
import torch

from engines.model import create_model, save_checkpoint
from engines.meta import ModelMeta
from tests.helpers import digest, face_image, one_line, run_cli as run


pytestmark = pytest.mark.slow  # real processes: not in the quick run


@pytest.fixture
def faces(tmp_path) -> Path:
    """A CSV face set: 16 small images (both genders, every age group) and labels.csv."""
    root = tmp_path / "faces"
    root.mkdir()
    rows = [["file", "age", "gender"]]
    for i in range(16):
        name = f"f{i:02d}.jpg"
        cv2.imwrite(str(root / name), face_image(i, 40))
        rows.append([name, str([1, 5, 10, 18, 28, 40, 50, 70][i % 8]), "mf"[i % 2]])
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return root


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """An untrained but finite model at 32 px (a real checkpoint file)."""
    torch.manual_seed(0)
    meta = ModelMeta(input_size=32)
    return save_checkpoint(create_model(meta=meta).eval(), tmp_path / "model.safetensors")


TRAIN = ("train", "--format", "csv", "--folds", "1", "--epochs", "1", "--input-size", "32", "--batch-size", "8", "--threads", "1")


# ----------------------------------------------------------- 2: outputs onto inputs
def test_eval_never_overwrites_its_labels(faces, checkpoint):
    labels = faces / "labels.csv"
    before = digest(labels)
    for option in ("--predictions", "--json", "--markdown"):
        args = ["--predictions", faces.parent / "p.csv"] if option != "--predictions" else []
        code, _, err = run("eval", "--data", labels, "--format", "csv", "--model", checkpoint, "--cropped", *args, option, labels)
        assert code == 1, err
        one_line(err, "that is the input")
    os.link(faces / "f00.jpg", faces.parent / "link.csv")  # an image, through a hard link
    code, _, err = run("eval", "--data", labels, "--format", "csv", "--model", checkpoint, "--cropped", "--predictions", faces.parent / "link.csv")
    assert code == 1
    one_line(err, "that is the input")
    assert digest(labels) == before


def test_train_save_is_a_new_safetensors_file(faces, checkpoint, tmp_path):
    labels, before = faces / "labels.csv", digest(checkpoint)
    code, _, err = run(*TRAIN, "--data", labels, "--out", tmp_path / "run", "--save", labels)
    assert code == 1
    one_line(err, "--save")
    assert ".safetensors" in err
    code, _, err = run(*TRAIN, "--data", labels, "--out", tmp_path / "run", "--init", checkpoint, "--save", checkpoint)
    assert code == 1
    one_line(err, "that is the input")
    # --init inside --out, where the run writes its fold's checkpoints
    inside = tmp_path / "run2" / "fold_0" / "final.safetensors"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(checkpoint.read_bytes())
    code, _, err = run(*TRAIN, "--data", labels, "--out", tmp_path / "run2", "--init", inside)
    assert code == 1
    one_line(err, "that is the input")
    assert digest(checkpoint) == before == digest(inside)


def test_ensemble_of_one_file_twice_is_refused(checkpoint, tmp_path):
    os.link(checkpoint, tmp_path / "same.safetensors")
    for other in (checkpoint, tmp_path / "same.safetensors"):
        code, _, err = run("ensemble", checkpoint, other, "-o", tmp_path / "e.safetensors")
        assert code == 1
        one_line(err, "the same file as")
    assert not (tmp_path / "e.safetensors").exists()


def test_convert_refuses_its_input_and_a_device(checkpoint, tmp_path):
    before = digest(checkpoint)
    os.link(checkpoint, tmp_path / "same.onnx")
    code, _, err = run("convert", "--model", checkpoint, "-o", tmp_path / "same.onnx")
    assert code == 1
    one_line(err, "that is the input")
    code, _, err = run("convert", "--model", checkpoint, "-o", "/dev/full", "--format", "onnx")
    assert code == 1
    one_line(err, "not a regular file")
    assert digest(checkpoint) == before


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(checkpoint, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()

    def limit_file_size():  # what a full disk does to a writer: its writes fail
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    code, _, err = run("convert", "--model", checkpoint, "-o", out, preexec_fn=limit_file_size)
    assert code == 1, err
    one_line(err, "cannot be written")
    assert list(out.parent.iterdir()) == []  # neither m.onnx nor a temporary file


def test_bench_json_onto_its_input_and_to_a_full_device(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes((Path(__file__).parents[2] / "samples" / "people.mp4").read_bytes())
    before = digest(clip)
    code, _, err = run("bench", clip, "--json", clip)
    assert code == 1
    one_line(err, "that is the input")
    assert digest(clip) == before
    for batches in ("-4", "0", "200000"):
        code, _, err = run("bench", clip, "--batches", batches)
        assert code == 2 and "--batches" in err and "Traceback" not in err, err


# --------------------------------------------------------------- 4: NaN and infinities
@pytest.fixture
def nan_checkpoint(tmp_path) -> Path:
    """A well-formed checkpoint whose weights hold NaN (as `train --lr inf` made them)."""
    torch.manual_seed(0)
    net = create_model(meta=ModelMeta(input_size=32, trained=True)).eval()
    with torch.no_grad():
        net.age_head.weight.fill_(float("nan"))
        net.gender_head.bias.fill_(float("inf"))
    return save_checkpoint(net, tmp_path / "nan.safetensors")


@pytest.mark.parametrize("option, value", [("--lr", "inf"), ("--weight-decay", "inf"), ("--years-weight", "nan"), ("--lr", "-1")])
def test_train_refuses_non_finite_options(faces, tmp_path, option, value):
    code, _, err = run(*TRAIN, "--data", faces / "labels.csv", "--out", tmp_path / "run", option, value)
    assert code == 2 and option in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_model_with_nan_weights_is_refused_at_load(nan_checkpoint, tmp_path, detector_models):
    for backend in ("torch", "onnxruntime"):
        code, out, err = run("annotate", Path(__file__).parents[2] / "samples" / "people.jpg", "-o", tmp_path / "o.jpg",
                             "--json", tmp_path / "o.jsonl", "--model", nan_checkpoint, "--backend", backend)
        assert code == 1, err
        one_line(err, "not finite numbers")
        assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jpg").exists()


def test_training_that_diverges_stops_with_one_line(faces, nan_checkpoint, tmp_path):
    code, _, err = run(*TRAIN, "--data", faces / "labels.csv", "--out", tmp_path / "run", "--init", nan_checkpoint)
    assert code == 1, err
    one_line(err, "the training loss is nan")
    assert not (tmp_path / "run" / "fold_0" / "final.safetensors").exists()


def test_jsonl_and_summary_never_hold_a_non_json_number(tmp_path):
    import numpy as np

    from engines.meta import ModelMeta as Meta
    from realtime.faces import Faces
    from realtime.jsonl import JsonlSink
    from realtime.sources import Frame

    faces = Faces(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32)).with_predictions(
        np.full((1, 8), np.nan, np.float32), np.full((1, 2), np.nan, np.float32), np.array([np.inf], np.float32))
    with JsonlSink(tmp_path / "o.jsonl", Meta()) as sink:
        sink.write(Frame(np.zeros((10, 10, 3), np.uint8), 0, 0.0), faces, None)
    record = json.loads((tmp_path / "o.jsonl").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSONL"))
    assert record["faces"][0]["age"] is None and record["faces"][0]["gender_prob"] is None


# ------------------------------------------------------- 12: one line, before any work
@pytest.mark.parametrize("options", [
    ["--crop-scale", "10", "--input-size", "8"], ["--crop-scale", "0"], ["--crop-scale", "nan"],
    ["--label-smoothing", "2"], ["--drop-rate", "1.5"], ["--workers", "-1"], ["--input-size", "100000"],
    ["--input-size", "8"],
])
def test_train_options_are_checked_against_the_one_table(faces, tmp_path, options):
    code, _, err = run(*TRAIN, "--data", faces / "labels.csv", "--out", tmp_path / "run", *options)
    named = [o for o in options if o.startswith("--")]
    assert code == 2 and "Traceback" not in err and any(o in err for o in named) and "expected" in err, err
    assert not (tmp_path / "run").exists()


def test_the_limits_table_is_the_one_check(tmp_path):
    """The same value is refused the same way by the settings, ModelMeta and a file's reader."""
    from engines.errors import RealtimeError
    from engines.meta import ModelMeta as Meta
    from train.trainer import TrainSettings

    with pytest.raises(RealtimeError, match=r"--input-size 8: expected 16 to 1024"):
        TrainSettings(data=tmp_path, input_size=8)
    with pytest.raises(RealtimeError, match=r"input_size = 8: expected 16 to 1024"):
        Meta(input_size=8)
    with pytest.raises(RealtimeError, match=r"crop_scale = 10 \(expected 0.5 to 4\)"):
        Meta.from_json(json.dumps({"crop_scale": 10}))


def _labels(faces: Path, text: str, encoding: str = "utf-8") -> Path:
    path = faces / "odd.csv"
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("text, message", [
    ("file,age,gender\nf00.jpg,30,m,extra,more\n", "odd.csv:2: 5 fields where the header has 3"),
    ("file,age,gender\nf00.jpg,100000000000000000000000000000,m\n", "expected 0 to 150 years"),
])
def test_bad_label_rows_are_one_line(faces, tmp_path, checkpoint, text, message):
    labels = _labels(faces, text)
    for command in (("eval", "--model", checkpoint, "--cropped", "--predictions", tmp_path / "p.csv", "--format", "csv"),
                    (*TRAIN, "--out", tmp_path / "run")):  # TRAIN names its --format (one per --data)
        code, _, err = run(*command, "--data", labels)
        assert code == 1, err
        one_line(err, message)


def test_a_utf16_csv_is_read_and_outside_files_are_named(faces, tmp_path, checkpoint):
    rows = "file,age,gender\n" + "".join(f"f{i:02d}.jpg,{20 + i},{'mf'[i % 2]}\n" for i in range(8))
    shutil.copy(faces / "f00.jpg", tmp_path / "outside.jpg")
    labels = _labels(faces, rows + "../outside.jpg,40,f\n", "utf-16")
    code, out, err = run("eval", "--data", labels, "--format", "csv", "--model", checkpoint, "--cropped",
                         "--predictions", tmp_path / "p.csv", "--bootstrap", "0")
    assert code == 0, err
    assert "9 images" in out and "1 files listed are outside its folder" in err
    labels = _labels(faces, "file,age\nf00.jpg,30\n", "cp1252")
    labels.write_bytes(b"file,age\nf\xe9.jpg,30\n")
    code, _, err = run("eval", "--data", labels, "--format", "csv", "--model", checkpoint, "--cropped", "--predictions", tmp_path / "q.csv")
    assert code == 1
    one_line(err, "not UTF-8 or UTF-16 text")


def test_a_split_with_an_empty_side_is_refused(faces, tmp_path):
    labels = faces / "labels.csv"
    for holdout in ("0.0001", "0.9999"):  # 16 images: every one trains, or every one validates
        code, _, err = run(*TRAIN, "--data", labels, "--out", tmp_path / "run", "--holdout", holdout)
        assert code == 1, err
        one_line(err, "validation images")
    assert not (tmp_path / "run" / "fold_0").exists()


def test_resume_from_a_foreign_state_is_one_line_without_torch_advice(faces, tmp_path):
    fold = tmp_path / "run" / "fold_0"
    fold.mkdir(parents=True)
    torch.save({"model": torch.nn.Linear(2, 2)}, fold / "last.pt")  # a pickled module: weights_only refuses it
    code, _, err = run(*TRAIN, "--data", faces / "labels.csv", "--out", tmp_path / "run", "--resume")
    assert code == 1, err
    one_line(err, "is not the resume state of this run")
    assert "weights_only" not in err


def test_eval_predictions_to_a_full_device_and_a_long_name(faces, checkpoint, tmp_path):
    base = ("eval", "--data", faces / "labels.csv", "--format", "csv", "--model", checkpoint, "--cropped", "--bootstrap", "0")
    code, _, err = run(*base, "--predictions", "/dev/full")
    assert code == 1
    one_line(err, "No space left on device")
    code, _, err = run(*base, "--predictions", tmp_path / ("p" * 300 + ".csv"))
    assert code == 1
    one_line(err, "name too long")
    code, _, err = run(*TRAIN, "--data", tmp_path / ("d" * 300), "--out", tmp_path / "run")
    assert code == 1
    one_line(err, "too long")
