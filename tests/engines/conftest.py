"""Shared fixtures for the engine tests: real face crops and a checkpoint whose outputs
depend on the face (the untrained model's are nearly constant, so argmax agreement
would mean nothing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.registry import backend_available
from engines.model import ProbabilityModel, save_checkpoint, untrained_model

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "utkface" / "images"
CROPS = 24

SKIP_REASONS = {
    "tensorrt": "TensorRT is not installed (pip install 'realtime[tensorrt]' on a machine with an NVIDIA GPU)",
    "openvino": "OpenVINO is not installed (pip install 'realtime[openvino]')",
}


def skip_unless_backend(name: str) -> None:
    if not backend_available(name):
        pytest.skip(SKIP_REASONS.get(name, f"backend {name} is not installed"))
    if name == "tensorrt" and not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")


@pytest.fixture(scope="session")
def require_backend():
    """``require_backend(name)`` skips the test, with the reason, where ``name`` cannot run."""
    return skip_unless_backend


@pytest.fixture(scope="session")
def tensorrt_gpu() -> bool:
    """Whether TensorRT and a CUDA GPU are both here."""
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory) -> Path:
    """A folder of real face crops: UTKFace from ../shared, else cut from the project's own
    samples (people.jpg, people.mp4) by its own detector and cropper, so a GPU machine
    without ../shared runs every TensorRT test."""
    if FACES.is_dir():
        return FACES
    return sample_faces(tmp_path_factory.mktemp("sample-faces"))


def sample_faces(folder: Path) -> Path:
    """Write face crops of samples/people.* to ``folder``: each detected face at several
    framings (crop scales) and mirrored, as JPEG files that each are one face crop."""
    import cv2

    from engines.meta import ModelMeta
    from realtime.crops import Cropper
    from realtime.detector import FaceDetector
    from realtime.detector_models import fetch_detector_models, resolve_detector_model
    from realtime.errors import RealtimeError
    from realtime.sources import open_source

    samples = Path(__file__).resolve().parents[2] / "samples"
    try:
        resolve_detector_model("full")
    except RealtimeError:
        try:
            fetch_detector_models()
        except RealtimeError as e:
            pytest.skip(f"needs face crops: no ../shared/data/utkface, and the detector models cannot be fetched ({e})")
    detector = FaceDetector(None, "full", 0.5)
    croppers = [Cropper(ModelMeta(input_size=160), scale) for scale in (1.0, 1.15, 1.3, 1.5)]
    count = 0
    try:
        for name in ("people.jpg", "people.mp4"):
            with open_source(samples / name) as source:
                for frame in source:
                    if frame.index % 5:
                        continue
                    faces = detector.detect(frame.image, frame.index)
                    for cropper in croppers:
                        for rgb in cropper.cut(frame.image, faces):
                            for image in (rgb, rgb[:, ::-1]):
                                cv2.imwrite(str(folder / f"{count:04d}.jpg"), np.ascontiguousarray(image[..., ::-1]))
                                count += 1
    finally:
        detector.close()
    if count == 0:
        pytest.skip("the detector found no face in samples/people.*")
    return folder


@pytest.fixture(scope="session")
def crops(faces_dir, net) -> np.ndarray:
    """(24, 3, S, S) float32 model input from UTKFace face crops."""
    from engines.convert import load_face_crops

    return load_face_crops(faces_dir, net.meta, CROPS)


@pytest.fixture(scope="session")
def net(faces_dir):
    """The seeded untrained model with batch-norm statistics from real crops and spread
    head weights: probabilities vary with the face, like a trained model's."""
    from engines.convert import load_face_crops

    model = untrained_model()
    x = torch.from_numpy(load_face_crops(faces_dir, model.meta, 64))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        model.backbone(x)
        model.eval()
        spread = model.backbone(x).std(0).mean() * model.age_head.in_features**0.5
        g = torch.Generator().manual_seed(1)
        for head, scale in ((model.age_head, 2.0), (model.gender_head, 2.0), (model.years_head, 20.0)):
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * scale / spread)
    return model


@pytest.fixture(scope="session")
def checkpoint(net, tmp_path_factory) -> Path:
    return save_checkpoint(net, tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="session")
def reference(net, crops):
    """Eager PyTorch outputs (age_probs, gender_probs, age_years) on ``crops``."""
    with torch.inference_mode():
        return tuple(t.numpy() for t in ProbabilityModel(net)(torch.from_numpy(crops)))


@pytest.fixture(scope="session")
def onnx_file(net, tmp_path_factory) -> Path:
    """``net`` exported once to ONNX (copy it before changing anything beside it)."""
    from engines.export import export_onnx

    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "model.onnx")
