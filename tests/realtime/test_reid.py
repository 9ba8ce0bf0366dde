"""Re-identification: people, not tracks (realtime/reid.py), on real clips with the
real faceres model from ../shared (skipped with a reason when it is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from realtime.reid import Gallery, ReidSettings, SceneCut
from realtime.tracker import Track
from tests.helpers import shared_path

STAGE = ("media", "stage_360p.mp4")
FACERES = ("models", "teachers", "hse_faceres.onnx")


def concatenated(src: Path, dst: Path, times: int) -> Path:
    """``src`` played ``times`` times in a row, as one H.264 file (PyAV)."""
    with av.open(str(dst), "w") as out:
        stream = None
        for _ in range(times):
            with av.open(str(src)) as inp:
                vin = inp.streams.video[0]
                if stream is None:
                    stream = out.add_stream("libx264", rate=vin.average_rate)
                    stream.width, stream.height, stream.pix_fmt = vin.width, vin.height, "yuv420p"
                for frame in inp.decode(vin):
                    out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        out.mux(stream.encode())
    return dst


def settings(model: Path | None, **reid):
    from realtime.pipeline import AnalyzerSettings

    return AnalyzerSettings(backend="onnxruntime", reid=ReidSettings(model=model, **reid))


def people(summary: Path) -> int:
    return json.loads(summary.read_text())["people"]


@pytest.fixture(scope="module")
def faceres(detector_models) -> Path:
    return shared_path(*FACERES)


@pytest.fixture(scope="module")
def stage_once(faceres, tmp_path_factory) -> dict:
    """The stage clip annotated once with re-identification: summary and JSONL."""
    from realtime.pipeline import OutputSettings, annotate

    tmp = tmp_path_factory.mktemp("once")
    stats = annotate(shared_path(*STAGE), OutputSettings(json=tmp / "f.jsonl", summary=tmp / "s.json"), settings(faceres))
    return {"summary": json.loads((tmp / "s.json").read_text()), "stats": stats,
            "lines": [json.loads(line) for line in (tmp / "f.jsonl").read_text().splitlines()]}


@pytest.mark.slow
def test_concatenated_clip_counts_its_people_once(stage_once, faceres, tmp_path):
    """The clip twice in a row counts at most 15% more people than once (without
    re-identification the second pass counts everyone again)."""
    from realtime.pipeline import OutputSettings, annotate

    twice = concatenated(shared_path(*STAGE), tmp_path / "twice.mp4", 2)
    annotate(twice, OutputSettings(summary=tmp_path / "reid.json"), settings(faceres))
    once = stage_once["summary"]["people"]
    assert people(tmp_path / "reid.json") <= 1.15 * once
    annotate(twice, OutputSettings(summary=tmp_path / "tracks.json"), settings(faceres, enabled=False))
    assert people(tmp_path / "tracks.json") >= 1.5 * once


@pytest.mark.slow
def test_looped_clip_counts_its_people_once(stage_once, faceres, tmp_path):
    """`serve --loop`'s source (Replay) for two passes of the clip: the second pass
    finds the same people."""
    from realtime.pipeline import OutputSettings, run
    from realtime.serve.hub import replay
    from realtime.sinks import Sink

    frames = len(stage_once["lines"])

    class TwoPasses(Sink):
        seen = 0

        def write(self, frame, faces, annotated=None):
            self.seen += 1
            self.stop_requested = self.seen >= 2 * frames

    stats = run(str(shared_path(*STAGE)), OutputSettings(summary=tmp_path / "loop.json", show=False), settings(faceres),
                sinks=[lambda source, analyzer, k, counts: TwoPasses()], wrap=replay(pace=False, loop=True))
    assert stats.frames == 2 * frames
    assert people(tmp_path / "loop.json") <= 1.15 * stage_once["summary"]["people"]


@pytest.mark.slow
def test_no_track_crosses_a_scene_cut(stage_once):
    """The clip cuts at frames 20, 82 and 211: no track id is on both sides of one
    (before, track 4 went from the performer to an audience member at 211)."""
    frames: dict[int, list[int]] = {}
    for line in stage_once["lines"]:
        for f in line["faces"]:
            frames.setdefault(f["track_id"], []).append(line["frame"])
    for cut in (20, 82, 211):
        assert not [t for t, seen in frames.items() if min(seen) < cut <= max(seen)], cut
        assert any(max(seen) < cut for seen in frames.values()) and any(min(seen) >= cut for seen in frames.values())
    assert any(min(seen) == 211 for seen in frames.values())  # the audience, on new tracks


def person_at(lines: list[dict], frame: int, x: float, y: float) -> int | None:
    """The person_id of the face whose box holds (x, y) in ``frame`` of a JSONL."""
    faces = [f for f in lines[frame]["faces"] if f["box"][0] <= x <= f["box"][2] and f["box"][1] <= y <= f["box"][3]]
    assert len(faces) == 1, (frame, x, y, faces)
    return faces[0]["person_id"]


#: where each of the stage clip's people is, (frame, x, y) twice: its first and last
#: scene, or two tracks of one face (see the README, "Counting people")
STAGE_PEOPLE = {
    "performer": [(10, 542, 75), (150, 252, 87)],  # frontal, before and after his close-up profile
    "pianist": [(10, 67, 200)],
    "woman with earrings": [(225, 405, 140), (272, 412, 140)],
    "man in the middle": [(225, 340, 90), (272, 347, 99)],
    "laughing woman": [(225, 187, 130), (272, 193, 140)],  # two tracks
    "laughing man": [(225, 67, 100), (272, 68, 100)],  # two tracks
}


@pytest.mark.slow
def test_people_in_summary_and_jsonl(stage_once):
    """Tracks join into people, and different people stay apart: the performer before
    and after his close-up is one person, each audience face's two tracks are one,
    and the six are six different people. The blurred background faces behind the
    close-up are not recognised and not counted; the count is at most 10 (1.5x the
    seven a viewer sees). Every JSONL face has a person_id beside its track_id (null
    until recognised), and the summary's tracks say their person."""
    summary, lines = stage_once["summary"], stage_once["lines"]
    faces = [f for line in lines for f in line["faces"]]
    assert all("person_id" in f for f in faces)
    ids = {name: {person_at(lines, *where) for where in places} for name, places in STAGE_PEOPLE.items()}
    assert all(len(found) == 1 and None not in found for found in ids.values()), ids
    assert len({found.pop() for found in ids.values()}) == len(STAGE_PEOPLE), ids
    assert len(STAGE_PEOPLE) <= summary["people"] <= 10
    assert summary["people"] < summary["counted_tracks"]
    background = [t for t in summary["tracks"] if 22 <= t["first_frame"] and t["last_frame"] <= 81 and t["frames"] >= 5]
    assert len(background) >= 6 and sum(t["person_id"] is None for t in background) >= 4  # dark, blurred: not people
    assert summary["unrecognised_tracks"] == sum(t["frames"] >= 5 and t["person_id"] is None for t in summary["tracks"]) > 0
    assert all(t["counted"] == (t["frames"] >= 5 and t["person_id"] is not None) for t in summary["tracks"])
    assert len({t["person_id"] for t in summary["tracks"] if t["counted"]}) == summary["people"]


@pytest.mark.slow
def test_embeddings_now_and_then_not_every_frame(faceres, detector_models):
    """A track is embedded when confirmed and every `refresh` seconds: far fewer
    embeddings than faces."""
    from realtime.pipeline import Analyzer

    with Analyzer(settings(faceres)) as analyzer:
        faces = sum(len(f) for _, f in analyzer.stream(shared_path(*STAGE)))
        assert 0 < analyzer.reid.embeddings < faces / 10
        assert analyzer.reid.gallery.people  # remembered while the analyzer is open
    assert analyzer.reid.gallery.people == {}  # closed: forgotten


@pytest.mark.slow
def test_no_reid_is_tracks_as_before(detector_models, tmp_path):
    """--no-reid: no embedder, no person_id in the JSONL, one person per counted track."""
    from realtime.pipeline import Analyzer, OutputSettings, annotate

    out = OutputSettings(json=tmp_path / "f.jsonl", summary=tmp_path / "s.json")
    annotate(shared_path(*STAGE), out, settings(None, enabled=False))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["people"] == summary["counted_tracks"] == sum(t["counted"] for t in summary["tracks"])
    assert not any("person_id" in f for line in (tmp_path / "f.jsonl").read_text().splitlines()
                   for f in json.loads(line)["faces"])
    with Analyzer(settings(None, enabled=False)) as analyzer:
        assert analyzer.reid is None


def test_no_model_counts_tracks_with_one_warning(detector_models, caplog, monkeypatch, tmp_path):
    """No faceres file found and none given: one warning line, people are tracks."""
    from realtime.pipeline import Analyzer

    monkeypatch.setenv("REALTIME_MODELS", str(detector_models))  # no hse_faceres.onnx there
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path))
    with caplog.at_level("WARNING"), Analyzer(settings(None)) as analyzer:
        assert analyzer.reid is None
    assert sum("no face-identity model" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow
def test_no_embedding_written_to_disk(faceres, tmp_path, monkeypatch):
    """With every output on, the run writes its outputs and nothing else (no cache,
    no gallery file), and no output holds an embedding."""
    from realtime.pipeline import OutputSettings, annotate

    cache = tmp_path / "cache"
    monkeypatch.setenv("REALTIME_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    out = OutputSettings(media=tmp_path / "o.mp4", json=tmp_path / "f.jsonl", summary=tmp_path / "s.json")
    annotate(shared_path(*STAGE), out, settings(faceres))
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("cache/onnx")] == ["f.jsonl", "o.mp4", "s.json"]
    keys = {k for line in (tmp_path / "f.jsonl").read_text().splitlines() for f in json.loads(line)["faces"] for k in f}
    keys.discard("gender_unsure")  # present where the overlay shows "?" (README: JSON Lines format)
    assert keys == {"box", "score", "age_group", "age_probs", "gender", "gender_prob", "age", "track_id", "predicted", "person_id"}
    assert "embedding" not in (tmp_path / "s.json").read_text()


def _track(tid: int) -> Track:
    return Track(tid, np.zeros(4, np.float32), 0, 0)


def test_gallery_forgets_after_the_window():
    """A person not seen for `window` seconds is dropped with their embeddings: the
    same face afterwards is a new person; within the window it is the same one."""
    rng = np.random.default_rng(0)
    face, other = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 64)).astype(np.float32))
    g = Gallery(0.6, ReidSettings(window=10.0))
    first, _ = g.update(0, _track(1), face, now=0.0)
    g.release((0, 1), None)
    g.clock[0] = 9.0
    g.forget()
    assert g.update(0, _track(2), face, now=9.0)[0] == first  # back within the window
    assert g.update(0, _track(3), other, now=9.0)[0] != first  # someone else
    g.release((0, 2), None)
    g.release((0, 3), None)
    g.clock[0] = 25.0
    g.forget()
    assert g.people == {}  # embeddings gone
    assert g.update(0, _track(4), face, now=25.0)[0] not in (first,)


def test_gallery_keeps_sources_apart_unless_asked():
    face = np.ones(8, np.float32) / np.sqrt(8)
    for across, same in ((False, False), (True, True)):
        g = Gallery(0.6, ReidSettings(across_sources=across))
        a, _ = g.update(0, _track(1), face, 0.0)
        g.release((0, 1), None)
        b, _ = g.update(1, _track(1), face, 0.0)
        assert (a == b) is same


def test_a_track_that_changes_face_restarts():
    """A refreshed embedding far from its person's says the track crossed to another
    face: the gallery asks for a restart and frees the person."""
    rng = np.random.default_rng(1)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 64)).astype(np.float32))
    g = Gallery(0.6, ReidSettings())
    track = _track(1)
    pid, restart = g.update(0, track, a, 0.0)
    assert not restart and g.update(0, track, a, 2.0) == (pid, False)
    assert g.update(0, track, b, 4.0) == (pid, True)
    assert g.people[pid].track is None
    assert g.stitch(0, _track(2), 4.1) is None  # its restarted track is not stitched back to the person


@pytest.mark.slow
def test_scene_cut_on_real_frames():
    """The stage clip's three cuts are found and nothing else; the crowd clip has none."""
    for name, cuts in (("stage_360p.mp4", [20, 82, 211]), ("crowd_1080p.mp4", [])):
        detect = SceneCut()
        with av.open(str(shared_path("media", name))) as c:
            found = [i for i, f in enumerate(c.decode(video=0)) if detect(f.to_ndarray(format="bgr24"))]
        assert found == cuts, name


@pytest.mark.slow
def test_cli_missing_reid_model_is_one_line(tmp_path, detector_models):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "realtime.cli", "annotate", str(shared_path(*STAGE)), "-o",
                           str(tmp_path / "o.mp4"), "--reid-model", str(tmp_path / "nope.onnx")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "nope.onnx: no such file" in done.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_a_person_keeps_their_labels_across_tracks():
    """Age and gender are smoothed over a person's tracks: a track that becomes a
    known person starts from the probabilities their last track ended with."""
    face = np.ones(8, np.float32) / np.sqrt(8)
    g = Gallery(0.6, ReidSettings())
    first = _track(1)
    first.add_prediction(np.array([0.0, 1.0], np.float32), np.array([0.9, 0.1], np.float32), 30.0, 1.0, 0.8, 0)
    g.update(0, first, face, 0.0)
    g.release((0, 1), first)
    second = _track(2)
    second.add_prediction(np.array([1.0, 0.0], np.float32), np.array([0.1, 0.9], np.float32), 10.0, 1.0, 0.8, 5)
    g.update(0, second, face, 1.0)
    assert second.weight == pytest.approx(2.0)
    assert second.gender_probs == pytest.approx([0.5, 0.5]) and second.age_years == pytest.approx(20.0)


def test_tracker_restart_and_end_all():
    from realtime.tracker import Tracker

    tracker = Tracker()
    tracker.tracks = [_track(1), _track(2)]
    tracker._next_id = 3
    fresh = tracker.restart(tracker.tracks[0])
    assert fresh.id == 3 and fresh.age_sum is None and [t.id for t in tracker.tracks] == [2, 3]
    tracker.end_all()
    assert tracker.tracks == [] and tracker.ended == 3
