"""The CLI contract: `realtime annotate` / `realtime run` outputs and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from engines.model import save_checkpoint, untrained_model
from realtime.cli import cli
from tests.helpers import ROOT, SAMPLES, check_record, invoke, shared_path, x264_settings


@pytest.mark.slow
def test_annotate_the_crowd_clip(tmp_path, detector_models):
    out, results = tmp_path / "crowd.mp4", tmp_path / "crowd.jsonl"
    result = invoke("annotate", shared_path("media", "crowd_1080p.mp4"), "-o", out, "--json", results)
    assert result.exit_code == 0, result.output
    assert "105 frames" in result.stdout
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.width, s.height) == (1920, 1080)
        assert float(s.average_rate) == 25.0
        assert sum(1 for _ in c.decode(s)) == 105
    settings = x264_settings(out)
    want = [b" threads=2 ", b" sliced_threads=1 ", b" rc_lookahead=5 "]  # the low-memory defaults
    assert all(w in settings for w in want), settings
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 105
    for i, record in enumerate(records):
        check_record(record, i)
    assert sum(1 for r in records if r["faces"]) >= 84
    assert records[25]["time"] == pytest.approx(1.0)


def test_annotate_an_image_and_a_folder(tmp_path, detector_models):
    out = tmp_path / "people_out.jpg"
    result = invoke("annotate", SAMPLES / "people.jpg", "-o", out, "--json", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    (record,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    check_record(record, 0)
    assert len(record["faces"]) == 2 and record["file"] == "people.jpg"

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes((SAMPLES / "people.jpg").read_bytes())
    result = invoke("annotate", folder, "-o", tmp_path / "annotated")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "annotated").iterdir()) == ["a.jpg", "b.jpg"]


def test_run_headless_on_a_file_with_json_on_stdout(tmp_path, detector_models, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    result = invoke("run", "--source", SAMPLES / "people.mp4", "--json", "-", "--output", tmp_path / "rec.mp4",
                    "--encoder-threads", 1, "--encoder-lookahead", 7)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 75
    check_record(json.loads(lines[-1]), 74)
    assert "running headless" in result.stderr
    settings = x264_settings(tmp_path / "rec.mp4")
    assert b" threads=1 " in settings and b" rc_lookahead=7 " in settings, settings


def test_encoder_option_defaults_are_the_library_defaults():
    from realtime.sinks import ENCODER_LOOKAHEAD, ENCODER_THREADS

    params = {p.name: p.default for p in cli.commands["annotate"].params}
    assert (params["encoder_threads"], params["encoder_lookahead"]) == (ENCODER_THREADS, ENCODER_LOOKAHEAD)


def _bad_file(tmp_path, name, content=b"\x00garbage" * 100):
    path = tmp_path / name
    path.write_bytes(content)
    return path


MISTAKES = [
    ("missing input", lambda t: ["annotate", t / "nope.mp4", "-o", t / "o.mp4"], "input not found"),
    ("bad video", lambda t: ["annotate", _bad_file(t, "bad.mp4"), "-o", t / "o.mp4"], "cannot open"),
    ("unreadable image", lambda t: ["annotate", _bad_file(t, "bad.jpg"), "-o", t / "o.jpg"], "not a readable image"),
    ("no camera", lambda t: ["run", "--source", "63", "--no-show"], "no camera at index 63"),
    ("wrong model file", lambda t: ["annotate", SAMPLES / "people.jpg", "-o", t / "o.jpg", "--model", _bad_file(t, "m.safetensors")], "not a realtime checkpoint"),
    ("missing model file", lambda t: ["annotate", SAMPLES / "people.jpg", "-o", t / "o.jpg", "--model", t / "m.onnx"], "model file not found"),
    ("wrong detector model", lambda t: ["annotate", SAMPLES / "people.jpg", "-o", t / "o.jpg", "--detector-model", _bad_file(t, "d.tflite")], "not a MediaPipe face detector model"),
    ("bad option", lambda t: ["annotate", SAMPLES / "people.jpg", "-o", t / "o.jpg", "--min-score", "7"], "--min-score"),
    ("unknown option", lambda t: ["run", "--sauce", "0"], "No such option"),
    ("wrong output type", lambda t: ["annotate", SAMPLES / "people.mp4", "-o", t / "o.avi"], "use one of .mkv, .mov, .mp4"),
    ("unwritable output", lambda t: ["annotate", SAMPLES / "people.mp4", "-o", t / "no" / "o.mp4"], "does not exist"),
    ("unknown backend", lambda t: ["annotate", SAMPLES / "people.jpg", "-o", t / "o.jpg", "--backend", "cuda"], "--backend"),
]


@pytest.mark.parametrize("case, args, message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_user_mistakes_are_one_line_and_non_zero(tmp_path, detector_models, case, args, message):
    result = invoke(*args(tmp_path))
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_the_installed_command_prints_one_line_and_no_traceback(tmp_path):
    exe = Path(sys.executable).parent / "realtime"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "realtime.cli"]
    done = subprocess.run([*cmd, "annotate", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o.mp4")],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: input not found: {tmp_path / 'nope.mp4'}"]


def test_an_untrained_model_says_so_on_every_run(tmp_path, detector_models):
    model = save_checkpoint(untrained_model(), tmp_path / "untrained.safetensors")
    out = tmp_path / "o.jpg"
    result = invoke("annotate", SAMPLES / "people.jpg", "-o", out, "--model", model)
    assert result.exit_code == 0
    assert "UNTRAINED" in result.stderr
    import cv2

    banner = cv2.imread(str(out))[5:15, 5:60]
    assert (banner[..., 2] > 150).mean() > 0.5 and (banner[..., 0] < 80).mean() > 0.5  # the red warning band


def test_models_list_shows_where(detector_models):
    result = invoke("models", "list")
    assert result.exit_code == 0
    assert "face_detection_full_range_sparse.tflite" in result.stdout and "$REALTIME_MODELS" in result.stdout


@pytest.mark.slow  # a run over several sources
def test_run_several_sources_writes_each_separately(tmp_path, detector_models):
    result = invoke("run", "--source", SAMPLES / "people.mp4", "--source", SAMPLES / "people.mp4", "--no-show",
                    "--output", tmp_path / "out_{source}.mp4", "--json", tmp_path / "r_{source}.jsonl",
                    "--summary", tmp_path / "s_{source}.json")
    assert result.exit_code == 0, result.output
    for k in (0, 1):
        lines = (tmp_path / f"r_{k}.jsonl").read_text().splitlines()
        assert len(lines) == 75
        check_record(json.loads(lines[10]), 10)
        with av.open(str(tmp_path / f"out_{k}.mp4")) as c:
            assert sum(1 for _ in c.decode(video=0)) == 75
        assert json.loads((tmp_path / f"s_{k}.json").read_text())["people"] == 2
    assert "150 frames" in result.stdout and "source 1: 2 people" in result.stdout


def test_several_sources_need_numbered_outputs(tmp_path, detector_models):
    result = invoke("run", "--source", SAMPLES / "people.mp4", "--source", SAMPLES / "people.mp4", "--no-show",
                    "--json", tmp_path / "r.jsonl")
    assert result.exit_code == 1 and "put {source} in the name" in result.stderr
