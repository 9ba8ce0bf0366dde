"""The library's front door (``from realtime import ...``) and a light start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.helpers import ROOT, SAMPLES

HEAVY = ("torch", "timm", "matplotlib", "scipy", "mediapipe", "onnxruntime", "onnx", "av", "openvino", "tensorrt")


def imported_after(code: str) -> list[str]:
    """Which HEAVY modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cli_and_the_package_import_nothing_heavy():
    assert imported_after("import realtime") == []
    assert imported_after("import realtime.cli") == []
    assert imported_after("import engines") == []


def test_help_runs_without_importing_torch():
    code = "import sys; sys.argv = ['realtime', '--help']\nfrom realtime.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"
    assert imported_after(code) == []


def test_front_door_names():
    import realtime
    from realtime import Analyzer, AnalyzerSettings, Faces, OutputSettings, annotate, open_source
    from realtime.analyzer import Analyzer as PipelineAnalyzer

    assert Analyzer is PipelineAnalyzer and callable(annotate) and callable(open_source)
    assert AnalyzerSettings().backend == "auto" and OutputSettings().media is None and len(Faces.empty()) == 0
    assert set(realtime.__all__) <= set(dir(realtime))


def test_stream_yields_each_frame_with_its_faces(detector_models, tmp_path):
    """``Analyzer.stream`` gives what ``annotate`` writes, frame by frame."""
    from realtime import Analyzer, AnalyzerSettings, OutputSettings, annotate

    settings = AnalyzerSettings(backend="onnxruntime")
    with Analyzer(settings) as analyzer:
        streamed = [(frame.index, faces) for frame, faces in analyzer.stream(SAMPLES / "people.mp4")]
    stats = annotate(SAMPLES / "people.mp4", OutputSettings(json=tmp_path / "people.jsonl"), settings)
    written = [json.loads(line) for line in (tmp_path / "people.jsonl").read_text().splitlines()]
    assert [i for i, _ in streamed] == list(range(stats.frames)) and stats.frames == len(written) > 0
    assert sum(len(f) for _, f in streamed) > 0
    for (_, faces), row in zip(streamed, written):
        assert len(faces) == len(row["faces"])
        if len(faces):
            np.testing.assert_allclose(faces.boxes, [f["box"] for f in row["faces"]], atol=0.5)
