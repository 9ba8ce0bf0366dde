import cv2
import numpy as np

from realtime.annotators import default_annotators
from realtime.pipeline import process
from realtime.sources import open_source
from tests.conftest import SAMPLES, shared_path


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
        stats = process(source, analyzer, default_annotators(analyzer.meta, fps=True), [ListSink()])
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
        stats = process(source, analyzer, [], [StopAfterThree()])
    assert stats.frames == 3 and not stats.interrupted
