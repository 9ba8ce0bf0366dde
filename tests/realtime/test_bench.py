import json

import pytest
from click.testing import CliRunner

from realtime.cli import cli
from realtime.timing import StageTimer, timed_iter
from tests.helpers import SAMPLES

STAGES = {"decode", "detect", "crop", "classify", "draw", "encode"}


def test_bench_json_schema(tmp_path, detector_models):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", str(SAMPLES / "people.mp4"), "--frames", "12", "--json", str(out),
                                      "--batches", "1,8", "--classifier-seconds", "0.2", "--classifier-backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["frames"] == 12 and report["fps"] > 0 and report["passthrough_fps"] > 0
    assert set(report["stages"]) == STAGES
    for stage in report["stages"].values():
        assert 0 <= stage["p50_ms"] <= stage["p95_ms"]
    assert [(r["backend"], r["batch"]) for r in report["classifier"]] == [("onnxruntime", 1), ("onnxruntime", 8)]
    assert all(r["crops_per_s"] > 0 for r in report["classifier"])
    assert report["machine"]["cores"] >= 1 and "onnxruntime" in report["machine"]["versions"]
    assert "passthrough floor" in result.stdout and "classify" in result.stdout


def test_bench_refuses_a_still_image(detector_models):
    result = CliRunner().invoke(cli, ["bench", str(SAMPLES / "people.jpg")])
    assert result.exit_code == 1 and "bench needs a video file" in result.stderr


def test_stage_timer_counts_one_sample_per_item():
    timer = StageTimer()
    for i in timed_iter(range(4), timer, "decode"):
        if i % 2:
            with timer("draw"):
                pass
        timer.end_frame()
    summary = timer.summary()
    assert list(summary) == ["decode", "draw"] and len(timer.samples["decode"]) == 4
    assert len(timer.samples["draw"]) == 3 and timer.samples["draw"][1] == 0.0  # from its first frame on
    assert summary["decode"]["p50_ms"] <= summary["decode"]["p95_ms"]


def test_stage_timer_memory_is_bounded_on_long_runs():
    timer = StageTimer(window=100)
    for i in range(1000):
        timer.add_frame({"detect": 0.001 * (i % 10), "draw": 0.002})
    assert 100 <= len(timer.samples["detect"]) < 200 and timer.samples["detect"][-1] == 0.001 * 9  # the newest kept
    summary = timer.summary()
    assert summary["detect"]["mean_ms"] == pytest.approx(4.5)  # over all 1000 frames
    assert summary["draw"] == {"p50_ms": 2.0, "p95_ms": 2.0, "mean_ms": 2.0}
