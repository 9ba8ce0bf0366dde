import shutil
import threading
import time

import numpy as np
import pytest

from realtime.errors import RealtimeError
from realtime.sources import ReconnectingSource, Source, mask_credentials, open_source
from tests.helpers import SAMPLES, shared_path


def test_video_file_frames_in_order_with_stream_time():
    with open_source(SAMPLES / "people.mp4") as s:
        assert (s.kind, s.live, s.size, s.fps) == ("video", False, (640, 360), 25.0)
        frames = list(s)
    assert len(frames) == 75 == s.frame_count
    assert [f.index for f in frames] == list(range(75))
    assert frames[0].time == 0.0 and frames[25].time == pytest.approx(1.0)
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8


def test_real_clip_metadata():
    with open_source(shared_path("media", "crowd_1080p.mp4")) as s:
        assert (s.size, s.fps, s.frame_count) == ((1920, 1080), 25.0, 105)


def test_image_and_folder(tmp_path):
    with open_source(SAMPLES / "people.jpg") as s:
        frames = list(s)
    assert s.kind == "image" and len(frames) == 1 and frames[0].name == "people.jpg"
    shutil.copy(SAMPLES / "people.jpg", tmp_path / "b.jpg")
    shutil.copy(SAMPLES / "people.jpg", tmp_path / "a.png")
    (tmp_path / "c.jpg").write_bytes(b"broken")  # unreadable images in a folder are skipped
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(tmp_path) as s:
        names = [f.name for f in s]
    assert s.kind == "folder" and names == ["a.png", "b.jpg"] and s.skipped == 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "input not found"),
        (lambda d: (d / "bad.mp4").write_bytes(b"\x00" * 4096) and d / "bad.mp4", "cannot open"),
        (lambda d: (d / "bad.jpg").write_bytes(b"GIF89a nope") and d / "bad.jpg", "not a readable image"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "folder holds no images"),
        (lambda d: "97", "no camera at index 97"),
    ],
)
def test_user_mistakes_raise_one_clear_error(tmp_path, make, message):
    with pytest.raises(RealtimeError, match=message):
        open_source(make(tmp_path))


def test_a_text_file_named_mp4_is_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("hello " * 1000)
    with pytest.raises(RealtimeError, match="notes.mp4"):
        open_source(p)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream", "rtsp://***@10.0.0.5:554/stream"),
        ("http://cam.local/video.mjpg", "http://cam.local/video.mjpg"),
        ("rtsp://user:p%40ss@host/x", "rtsp://***@host/x"),
        ("rtsp://ghp_t0ken@host/x", "rtsp://***@host/x"),  # a token alone as the userinfo
        ("rtsp://admin:p@ss/w0rd@host:554/live", "rtsp://***@host:554/live"),  # "@" and "/" in the password
        ("https://cdn/live.m3u8?token=abc123&quality=hd", "https://cdn/live.m3u8?token=***&quality=hd"),
        ("https://s3/v.mp4?X-Amz-Signature=f00&api_key=k3y#t=5", "https://s3/v.mp4?X-Amz-Signature=***&api_key=***#t=5"),
        ("cannot open http://u:pw@cam/x?auth=zz: refused", "cannot open http://***@cam/x?auth=*** refused"),
    ],
)
def test_credentials_are_masked(url, shown):
    assert mask_credentials(url) == shown


class Silent(Source):
    """A stream that connects and then sends nothing (a camera with its sensor off)."""

    kind, live = "stream", True

    def __init__(self):
        super().__init__("rtsp://cam/silent")

    def __iter__(self):
        return iter(())


def test_a_stream_that_reopens_but_sends_nothing_backs_off_and_gives_up():
    opened = []

    def opener():
        opened.append(time.monotonic())
        return open_source(SAMPLES / "people.jpg") if len(opened) == 1 else Silent()

    source = ReconnectingSource(opener, first_delay=0.05, max_delay=0.4, max_gap=1.5)
    frames = []
    reader = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    reader.start()
    reader.join(timeout=15)
    source.interrupt()
    assert not reader.is_alive(), "a source that keeps opening without frames must still end after max_gap"
    assert len(frames) == 1 and source.reconnects == 0  # reopening without frames is not a reconnect
    waits = np.diff(opened)
    assert 3 <= len(opened) <= 8 and (waits[1:] >= waits[:-1] - 0.02).all()  # backing off: 0.05, 0.1, 0.2, 0.4...
