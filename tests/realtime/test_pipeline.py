import cv2
import numpy as np

from realtime.annotators import default_annotators
from realtime.loop import process
from realtime.sources import open_source
from tests.helpers import SAMPLES, shared_path


def test_all_faces_of_a_frame_go_to_the_engine_in_one_call(analyzer, monkeypatch):
    batches = []
    infer = analyzer.engine.infer

    def recording_infer(crops):
        batches.append(len(crops))
        return infer(crops)

    monkeypatch.setattr(analyzer.engine, "infer", recording_infer)
    image = cv2.imread(str(shared_path("media", "group_6faces.jpg")))
    faces = analyzer(image, 0)
    assert batches == [len(faces)] and len(faces) >= 5
    assert faces.age_probs.shape == (len(faces), 8) and faces.gender_probs.shape == (len(faces), 2)
    np.testing.assert_allclose(faces.age_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(faces.gender_probs.sum(1), 1, atol=1e-5)
    assert faces.age_years.shape == (len(faces),)


def test_process_runs_every_frame_through_annotators_and_sinks(analyzer):
    written = []

    class ListSink:
        stop_requested = False

        def write(self, frame, faces, annotated):
            written.append((frame.index, len(faces), annotated.shape))

    with open_source(SAMPLES / "people.mp4") as source:
        stats = process([source], analyzer.analyze, [default_annotators(analyzer.meta, fps=True)], [[ListSink()]])
    assert stats.frames == 75 == len(written)
    assert [w[0] for w in written] == list(range(75))
    assert stats.faces_per_frame == [w[1] for w in written]
    assert stats.faces >= 140  # two faces on (almost) every frame
    assert "75 frames" in stats.summary()


def test_a_sink_can_stop_the_run(analyzer):
    class StopAfterThree:
        stop_requested = False
        n = 0

        def write(self, frame, faces, annotated):
            self.n += 1
            self.stop_requested = self.n == 3

    with open_source(SAMPLES / "people.mp4") as source:
        stats = process([source], analyzer.analyze, [[]], [[StopAfterThree()]])
    assert stats.frames == 3 and not stats.interrupted


def test_a_live_queue_drops_the_oldest_and_stops_its_producer():
    import threading

    from realtime.threads import FrameQueue

    stop = threading.Event()
    q = FrameQueue(2, stop, drop_oldest=True)
    assert all(q.put(i) for i in range(5))
    assert q.dropped == 3
    stop.set()
    assert q.put(99) is False  # a stopped pipeline tells its reader to finish
    assert list(q) == [3, 4]


def test_a_producer_waits_for_room_before_making_its_next_item():
    import threading

    from realtime.threads import FrameQueue

    stop = threading.Event()
    q = FrameQueue(1, stop)
    assert q.wait_for_room() and q.put("a")
    waiter = threading.Thread(target=lambda: results.append(q.wait_for_room()))
    results = []
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # full: it waits
    assert next(iter(q)) == "a"
    waiter.join(5)
    assert results == [True]  # room again
    q.put("b")
    stop.set()
    assert q.wait_for_room() is False  # full and stopped: give up
    live = FrameQueue(1, threading.Event(), drop_oldest=True)
    live.put(1)
    assert live.wait_for_room()  # a live queue never waits: it drops the oldest


def test_several_sources_share_one_classifier_batch(analyzer, monkeypatch):
    from realtime.sources import Frame

    batches = []
    infer = analyzer.engine.infer
    monkeypatch.setattr(analyzer.engine, "infer", lambda crops: batches.append(len(crops)) or infer(crops))
    group = cv2.imread(str(shared_path("media", "group_6faces.jpg")))
    people = cv2.imread(str(SAMPLES / "people.jpg"))
    found = analyzer.analyze([(7, Frame(group, 0, 0.0)), (8, Frame(people, 0, 0.0))])
    assert len(found) == 2 and len(found[1]) == 2 and len(found[0]) >= 5
    assert batches == [len(found[0]) + 2]  # one call for both sources
    assert found[0].track_ids is not None and set(analyzer.trackers) >= {7, 8}  # a tracker per source


def test_a_file_is_decoded_at_most_three_frames_ahead_of_its_sinks():
    """Frames are 6 MB each at 1080p, and a stage waits for room before it takes or
    decodes the next: ahead of the frame being written are only the two analysed and
    the one decoded that wait in the queues."""
    import time

    from realtime.loop import passthrough
    from realtime.sources import Frame

    made, ahead = [], []

    def source():
        for i in range(30):
            made.append(i)
            yield Frame(np.zeros((8, 8, 3), np.uint8), i, i / 25)

    class SlowSink:
        stop_requested = False

        def write(self, frame, faces, annotated):
            time.sleep(0.01)  # the source outruns it, so every queue fills
            ahead.append(made[-1] - frame.index)

    stats = process([source()], passthrough, [[]], [[SlowSink()]])
    assert stats.frames == 30
    assert 2 <= max(ahead) <= 3, ahead  # queues of 4 frames, each stage holding the next in hand: 10
