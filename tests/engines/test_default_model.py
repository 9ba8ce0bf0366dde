"""The default model's runtime form (weights/default.onnx, what ONNX Runtime runs without
torch) is the export of weights/default.safetensors. After replacing the checkpoint,
regenerate it with ``realtime convert --format onnx -o engines/weights/default.onnx``."""

from __future__ import annotations

import numpy as np
import torch

from engines.registry import create_engine
from engines.files import DEFAULT_ONNX, DEFAULT_WEIGHTS, SOURCE_KEY, file_sha256, onnx_metadata, read_onnx_meta
from engines.model import ProbabilityModel, default_model
from engines.files import read_checkpoint_meta as read_meta

REGENERATE = "regenerate it: realtime convert --format onnx -o engines/weights/default.onnx"


def test_default_onnx_is_exported_from_the_default_checkpoint():
    assert DEFAULT_ONNX.is_file(), f"{DEFAULT_ONNX} is missing; {REGENERATE}"
    assert onnx_metadata(DEFAULT_ONNX).get(SOURCE_KEY) == file_sha256(DEFAULT_WEIGHTS), f"stale {DEFAULT_ONNX.name}; {REGENERATE}"
    assert read_onnx_meta(DEFAULT_ONNX) == read_meta(DEFAULT_WEIGHTS)


def test_default_onnx_gives_the_checkpoints_outputs_on_real_faces(faces_dir):
    """Measured on 256 UTKFace crops: max abs difference 1e-6 (probabilities), 7e-5 (years)."""
    from engines.convert import load_face_crops

    net = default_model()
    crops = load_face_crops(faces_dir, net.meta, 64)
    with torch.inference_mode():
        ref = [t.numpy() for t in ProbabilityModel(net)(torch.from_numpy(crops))]
    engine = create_engine(None, "onnxruntime")
    out = engine.infer(crops)
    np.testing.assert_allclose(out.age_probs, ref[0], atol=1e-4)
    np.testing.assert_allclose(out.gender_probs, ref[1], atol=1e-4)
    np.testing.assert_allclose(out.age_years, ref[2], atol=1e-2)
    assert (out.age_probs.argmax(1) == ref[0].argmax(1)).all()
