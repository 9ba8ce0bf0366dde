
import cv2
import numpy as np
import pytest

from realtime.detector import FaceDetector
from realtime.detector_models import DETECTOR_MODELS, fetch_detector_models, list_detector_models, resolve_detector_model
from realtime.errors import RealtimeError
from realtime.sources import open_source
from tests.helpers import SAMPLES, shared_path


@pytest.fixture(scope="module")
def detector(detector_models):
    with FaceDetector() as d:
        yield d


def test_finds_the_faces_in_a_group_photo(detector):
    image = cv2.imread(str(shared_path("media", "group_6faces.jpg")))
    faces = detector.detect(image, frame_index=4)
    assert len(faces) >= 5
    assert faces.frame_index == 4
    h, w = image.shape[:2]
    assert (faces.boxes >= 0).all() and (faces.boxes[:, [0, 2]] <= w).all() and (faces.boxes[:, [1, 3]] <= h).all()
    assert ((faces.scores >= 0.5) & (faces.scores <= 1)).all()
    assert (faces.boxes[:, 2] > faces.boxes[:, 0]).all()


def test_finds_faces_on_most_frames_of_the_crowd_clip(detector):
    with open_source(shared_path("media", "crowd_1080p.mp4")) as source:
        counts = [len(detector.detect(f.image, f.index)) for f in source]
    assert len(counts) == 105
    assert sum(c > 0 for c in counts) >= 0.8 * len(counts), counts


def test_finds_both_faces_in_the_project_sample(detector):
    assert len(detector.detect(cv2.imread(str(SAMPLES / "people.jpg")))) == 2


def test_nothing_in_a_blank_frame(detector):
    assert len(detector.detect(np.full((480, 640, 3), 127, np.uint8))) == 0


def test_short_range_model_loads_and_misses_the_crowd(detector_models):
    # ../shared/README: the short-range model finds nothing in crowd_1080p.mp4
    with FaceDetector(range="short") as d, open_source(shared_path("media", "crowd_1080p.mp4")) as source:
        frame = next(iter(source))
        assert len(d.detect(frame.image)) == 0


def test_min_score_filters(detector_models):
    image = cv2.imread(str(shared_path("media", "group_6faces.jpg")))
    with FaceDetector(min_score=0.8) as strict:
        assert 1 <= len(strict.detect(image)) < 5


@pytest.mark.parametrize("content", [b"", b"not a tflite model at all" * 10])
def test_wrong_model_file_is_one_clear_error(tmp_path, content):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    with pytest.raises(RealtimeError, match="not a MediaPipe face detector model"):
        FaceDetector(bad)


def test_missing_model_names_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("REALTIME_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RealtimeError, match=r"face_detection_full_range_sparse.tflite not found.*realtime models fetch"):
        resolve_detector_model("full")
    with pytest.raises(RealtimeError, match="detector model not found"):
        resolve_detector_model("full", tmp_path / "nope.tflite")
    with pytest.raises(RealtimeError, match="unknown detector range"):
        resolve_detector_model("medium")


def test_resolution_order_explicit_then_env_then_cache(tmp_path, monkeypatch, detector_models):
    env_dir, cache = tmp_path / "env", tmp_path / "cache"
    env_dir.mkdir()
    monkeypatch.setenv("REALTIME_MODELS", str(env_dir))
    monkeypatch.setenv("REALTIME_CACHE", str(cache))
    fetched = fetch_detector_models(detector_models)  # --from a folder: copies and verifies
    assert all(p.parent == cache / "models" and p.is_file() for p in fetched)
    assert resolve_detector_model("full").parent == cache / "models"
    (env_dir / DETECTOR_MODELS["full"].filename).write_bytes(b"x")
    assert resolve_detector_model("full").parent == env_dir
    explicit = tmp_path / "mine.tflite"
    explicit.write_bytes(b"x")
    assert resolve_detector_model("full", explicit) == explicit
    where = {m.range: origin for m, _, origin in list_detector_models()}
    assert where == {"full": "$REALTIME_MODELS", "short": "cache"}


def test_fetch_refuses_a_file_with_the_wrong_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "src"
    source.mkdir()
    for m in DETECTOR_MODELS.values():
        (source / m.filename).write_bytes(b"tampered")
    with pytest.raises(RealtimeError, match="does not match the pinned"):
        fetch_detector_models(source)
    assert not any((tmp_path / "cache" / "models").iterdir())


@pytest.mark.slow  # the crowd clip, tiled
def test_tiles_find_more_small_faces_in_the_crowd(detector_models):
    with open_source(shared_path("media", "crowd_1080p.mp4")) as source:
        frames = [f.image for f in source if f.index % 10 == 0]
    with FaceDetector(tiles="off") as plain, FaceDetector(tiles="auto") as tiled:
        assert tiled.grid(1920, 1080) and not tiled.grid(640, 360) and not plain.grid(1920, 1080)
        found_plain = [len(plain.detect(f)) for f in frames]
        found_tiled = [tiled.detect(f) for f in frames]
    assert sum(len(f) for f in found_tiled) >= 1.8 * sum(found_plain)
    for faces in found_tiled:  # merged: no two boxes on the same face
        from realtime.boxes import iou_matrix

        iou = iou_matrix(faces.boxes, faces.boxes)
        assert (iou[~np.eye(len(faces), dtype=bool)] <= 0.4).all()


@pytest.mark.parametrize("tiles", ["many", 0, 9, "-1"])
def test_bad_tiles_option(detector_models, tiles):
    with pytest.raises(RealtimeError, match="--tiles"):
        FaceDetector(tiles=tiles)


def test_a_detector_never_closed_exits_quietly(detector_models):
    """A script or notebook that forgets close(): the process still exits 0 with no
    traceback (MediaPipe's own finaliser fails once its thread pool has shut down)."""
    import subprocess
    import sys

    code = ("import numpy as np\nfrom realtime.detector import FaceDetector\n"
            f"d = FaceDetector({str(detector_models / 'face_detection_full_range_sparse.tflite')!r})\n"
            "print(len(d.detect(np.zeros((120, 160, 3), np.uint8))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def test_mediapipe_is_imported_without_matplotlib(detector_models):
    """MediaPipe's drawing helpers import matplotlib.pyplot (~40 MB, ~0.3 s) that
    detection never uses: a detector leaves it unloaded, and the helpers still get the
    real pyplot when they use it."""
    import subprocess
    import sys

    code = ("import sys\nfrom realtime.detector import FaceDetector\n"
            f"d = FaceDetector({str(detector_models / 'face_detection_full_range_sparse.tflite')!r})\n"
            "print('matplotlib' in sys.modules)\n"
            "from mediapipe.tasks.python.vision import drawing_utils\nimport matplotlib.pyplot as plt\n"
            "print(drawing_utils.plt.figure is plt.figure)\nd.close()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"], done.stdout
