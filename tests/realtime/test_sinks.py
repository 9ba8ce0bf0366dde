import json

import av
import numpy as np
import pytest

from engines.meta import ModelMeta
from realtime.errors import RealtimeError
from realtime.faces import Faces
from realtime.jsonl import JsonlSink
from realtime.sinks import VideoSink, WindowSink, check_writable, has_display
from realtime.sources import Frame
from tests.helpers import x264_settings


def frames(n, w, h):
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : (i * 7) % w] = (0, 128, 255)
        yield Frame(img, i, i / 30)


@pytest.mark.parametrize("w, h, fps", [(320, 240, 30.0), (321, 181, 29.97)])
def test_video_sink_writes_h264_with_the_source_size_and_rate(tmp_path, w, h, fps):
    path = tmp_path / "out.mp4"
    with VideoSink(path, fps) as sink:
        for f in frames(12, w, h):
            sink.write(f, Faces.empty(f.index), f.image)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.width, s.height) == (w, h)
        assert float(s.average_rate) == pytest.approx(fps, rel=1e-3)
        decoded = [fr.to_ndarray(format="bgr24") for fr in c.decode(s)]
    assert len(decoded) == 12
    assert abs(int(decoded[5][h // 2, 30, 2]) - 255) < 30  # content survived encoding


def test_video_sink_closes_a_playable_file_when_interrupted(tmp_path):
    path = tmp_path / "cut.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoSink(path, 25) as sink:
            for f in frames(5, 64, 48):
                sink.write(f, Faces.empty(), f.image)
            raise KeyboardInterrupt
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_jsonl_sink_one_flushed_line_per_frame(tmp_path):
    meta = ModelMeta()
    faces = Faces(np.array([[1.4, 2.6, 30.2, 40.9]], np.float32), np.array([0.87654], np.float32))
    faces = faces.with_predictions(
        np.array([[0, 0, 0, 0.1, 0.7, 0.2, 0, 0]], np.float32), np.array([[0.2, 0.8]], np.float32), np.array([27.0], np.float32)
    )
    path = tmp_path / "r.jsonl"
    with JsonlSink(path, meta) as sink:
        sink.write(Frame(np.zeros((4, 4, 3), np.uint8), 0, 0.0), faces, None)
        assert len(path.read_text().splitlines()) == 1  # flushed before close
        sink.write(Frame(np.zeros((4, 4, 3), np.uint8), 1, 0.04), Faces.empty(1), None)
    first, second = [json.loads(line) for line in path.read_text().splitlines()]
    assert first["frame"] == 0 and second == {"frame": 1, "time": 0.04, "faces": []}
    face = first["faces"][0]
    assert face["box"] == [1, 3, 30, 41] and all(isinstance(v, int) for v in face["box"])
    assert face["age_group"] == "25-32" and face["gender"] == "male" and face["gender_prob"] == 0.8
    assert len(face["age_probs"]) == 8 and face["score"] == pytest.approx(0.8765)


def test_no_display_means_no_window(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not has_display()
    with pytest.raises(RealtimeError, match="no display"):
        WindowSink()


@pytest.mark.parametrize(
    "name, suffixes, message",
    [
        ("missing_dir/out.mp4", None, "does not exist"),
        ("out.avi", frozenset({".mp4"}), "use one of .mp4"),
        (".", None, "cannot be written"),
    ],
)
def test_check_writable_refuses(tmp_path, name, suffixes, message):
    with pytest.raises(RealtimeError, match=message):
        check_writable(tmp_path / name, suffixes)


@pytest.mark.parametrize("kwargs, want", [
    ({}, [b" threads=2 ", b" sliced_threads=1 ", b" rc_lookahead=5 "]),  # the defaults: ~100 MB less at 1080p
    ({"threads": 1, "lookahead": 7}, [b" threads=1 ", b" rc_lookahead=7 "]),
    ({"threads": 0, "lookahead": None}, [b" sliced_threads=0 ", b" rc_lookahead=10 "]),  # x264's own: veryfast's
])
def test_encoder_threads_and_lookahead_reach_x264(tmp_path, kwargs, want):
    path = tmp_path / "out.mp4"
    with VideoSink(path, 25, **kwargs) as sink:
        for f in frames(3, 320, 240):
            sink.write(f, Faces.empty(f.index), f.image)
    settings = x264_settings(path)
    assert all(w in settings for w in want), settings


@pytest.mark.parametrize("kwargs", [{"threads": -1}, {"threads": 65}, {"lookahead": -1}, {"lookahead": 251}])
def test_bad_encoder_settings_are_one_clear_error(tmp_path, kwargs):
    with pytest.raises(RealtimeError, match="encoder"):
        VideoSink(tmp_path / "out.mp4", 25, **kwargs)


def test_video_sink_takes_frames_whose_rows_are_not_contiguous(tmp_path):
    """The encoder wraps a drawn frame without copying it when its rows are plain
    (a decoded frame, a drawing); a mirrored or strided view is copied first."""
    path = tmp_path / "views.mp4"
    with VideoSink(path, 25) as sink:
        for f in frames(3, 64, 48):
            sink.write(f, Faces.empty(f.index), f.image[:, ::-1])
        wide = np.zeros((48, 128, 3), np.uint8)
        sink.write(Frame(wide, 3, 3 / 30), Faces.empty(3), wide[:, ::2])
    with av.open(str(path)) as c:
        assert [fr.width for fr in c.decode(video=0)] == [64] * 4
