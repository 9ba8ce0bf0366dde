"""Re-identification's quality gate from the CLI (--reid-min-face, --reid-min-contrast):
a stricter gate embeds fewer faces of a real clip, checked through the one table of
limits, with the library's defaults. The faces of samples/people.mp4 measure 41-62 px
(Grace Hopper, grey-level std 44-61) and 71-100 px (Eileen Collins, std 42-50)."""

from __future__ import annotations

import json

import pytest

from realtime.cli import cli
from realtime.reid import ReidSettings
from tests.helpers import SAMPLES, invoke, shared_path

CLIP = SAMPLES / "people.mp4"


def gated(**gate) -> dict:
    """samples/people.mp4 through the analyzer with the faceres model and ``gate``:
    the embeddings computed, and each track's frames with and without a person."""
    from realtime.analyzer import Analyzer, AnalyzerSettings

    model = shared_path("models", "teachers", "hse_faceres.onnx")
    frames: dict[int, list[int]] = {}  # track -> the frames it showed a person on
    tracks = set()
    with Analyzer(AnalyzerSettings(backend="onnxruntime", reid=ReidSettings(model=model, **gate))) as a:
        for frame, faces in a.stream(CLIP):
            for tid, pid in zip(faces.track_ids.tolist(), faces.person_ids.tolist()):
                tracks.add(tid)
                if pid >= 0:
                    frames.setdefault(tid, []).append(frame.index)
        embeddings = a.reid.embeddings
    return {"embeddings": embeddings, "tracks": tracks, "recognised": frames}


@pytest.fixture(scope="module")
def default(detector_models) -> dict:
    return gated()


@pytest.mark.slow
def test_a_stricter_contrast_gate_embeds_fewer_faces(default):
    """At std 55 the astronaut's face (42-50) is never embedded: fewer embeddings,
    and her track is not recognised (the summary counts it apart, not as a person)."""
    strict = gated(min_contrast=55.0)
    assert len(default["tracks"]) == 2 and len(default["recognised"]) == 2
    assert 0 < strict["embeddings"] < default["embeddings"]
    assert len(strict["recognised"]) == 1


@pytest.mark.slow
def test_reid_min_face_option_reaches_the_gate(default, tmp_path):
    """`annotate --reid-min-face 60`: Grace Hopper's face (41 px at first) waits until
    it grows to 60 px before it is embedded, so her person_id comes later than with
    the default 20 px; `--reid-min-face 200` embeds no one: no person counted."""
    faceres = shared_path("models", "teachers", "hse_faceres.onnx")
    for px, people in ((60, 2), (200, 0)):
        out = tmp_path / str(px)
        result = invoke("annotate", CLIP, "-o", out.with_suffix(".mp4"), "--json", out.with_suffix(".jsonl"),
                        "--summary", out.with_suffix(".json"), "--backend", "onnxruntime", "--reid-model", faceres,
                        "--reid-min-face", px)
        assert result.exit_code == 0, result.output
        summary = json.loads(out.with_suffix(".json").read_text())
        assert (summary["people"], summary["unrecognised_tracks"]) == (people, 2 - people)
        start, known = {}, {}  # track -> (frame, side) of its first face, of its first face with a person
        for line in out.with_suffix(".jsonl").read_text().splitlines():
            record = json.loads(line)
            for face in record["faces"]:
                x1, y1, x2, y2 = face["box"]
                start.setdefault(face["track_id"], (record["frame"], min(x2 - x1, y2 - y1)))
                if face["person_id"] is not None:
                    known.setdefault(face["track_id"], (record["frame"], min(x2 - x1, y2 - y1)))
        assert len(start) == 2 and len(known) == people
        if px == 60:
            small = min(start, key=lambda t: start[t][1])
            big = max(start, key=lambda t: start[t][1])
            assert start[small][1] < 50 and known[small][1] >= 58  # embedded once it was 60 px (a frame before)
            assert known[small][0] > default["recognised"][small][0] + 10  # later than with the default
            assert known[big][0] == default["recognised"][big][0]  # the big face: as with the default


def test_gate_option_defaults_are_the_library_defaults():
    params = {p.name: p.default for p in cli.commands["annotate"].params}
    assert (params["reid_min_face"], params["reid_min_contrast"]) == (ReidSettings.min_side, ReidSettings.min_contrast)
    for name in ("run", "serve", "archive"):
        assert {"reid_min_face", "reid_min_contrast"} <= {p.name for p in cli.commands[name].params}, name
