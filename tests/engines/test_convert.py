"""`engines.convert`: ONNX and OpenVINO round trips checked against torch, settings errors."""

from __future__ import annotations

import numpy as np
import pytest

from engines.files import cached_path

from engines.registry import create_engine

from engines.resolve import onnx_for
from engines.convert import ConvertSettings, compare_with_torch, convert, load_face_crops
from engines.files import read_onnx_meta
from realtime.errors import RealtimeError

pytestmark = pytest.mark.slow  # conversions and several networks: not in the quick run


def test_onnx_round_trip(checkpoint, net, faces_dir, tmp_path, crops, reference):
    result = convert(ConvertSettings(model=checkpoint, output=tmp_path / "m.onnx", check=True, check_images=faces_dir))
    assert result.format == "onnx" and result.files == [tmp_path / "m.onnx"]
    assert read_onnx_meta(result.output) == net.meta
    assert result.check.ok and result.check.crops == 64 and result.check.age_agreement == 1.0
    assert "max abs diff" in result.summary() and "-> ok" in result.summary()
    out = create_engine(result.output, backend="onnxruntime").infer(crops)
    np.testing.assert_allclose(out.age_probs, reference[0], atol=1e-4)


def test_openvino_round_trip(checkpoint, net, faces_dir, tmp_path, crops, reference, require_backend):
    require_backend("openvino")
    result = convert(ConvertSettings(model=checkpoint, output=tmp_path / "m.xml", check=True, check_images=faces_dir))
    assert result.files == [tmp_path / "m.xml", tmp_path / "m.bin"] and all(p.is_file() for p in result.files)
    assert result.check.ok and result.check.gender_agreement == 1.0
    engine = create_engine(result.output)  # auto: an IR runs on openvino only
    assert engine.name == "openvino" and engine.meta == net.meta and engine.precision == "f32"
    np.testing.assert_allclose(engine.infer(crops).gender_probs, reference[1], atol=1e-4)


def test_openvino_reduced_precision(faces_dir, tmp_path, require_backend):
    """On the shipped trained model: bf16 max difference measured 2.5e-2 and 3.8e-2 on
    two sets of 64 UTKFace crops (the previous default: 1.1e-2) against the 0.1 tolerance. Not on the ``checkpoint``
    fixture: its heads are scaled up to spread the probabilities, which amplifies
    bf16's rounding to 0.37 and says nothing about a real model."""
    from engines.files import DEFAULT_WEIGHTS

    require_backend("openvino")
    result = convert(ConvertSettings(model=DEFAULT_WEIGHTS, output=tmp_path / "m.xml", fp16=True, check=True,
                                     check_images=faces_dir))
    precision = create_engine(result.output, backend="openvino").precision
    assert precision in ("bf16", "f16", "f32")
    assert result.check.tolerance == {"bf16": 1e-1, "f16": 2e-2, "f32": 2e-2}[precision]
    assert result.check.ok and result.check.gender_agreement >= 0.9


def test_without_output_fills_the_backends_cache(checkpoint, require_backend):
    result = convert(ConvertSettings(model=checkpoint, format="onnx"))
    assert result.output == cached_path("onnx", checkpoint, ".onnx") == onnx_for(checkpoint)
    require_backend("openvino")
    fast = create_engine(checkpoint, backend="openvino").precision
    result = convert(ConvertSettings(model=checkpoint, format="openvino"))  # an f32 IR: OpenVINO runs it exactly
    assert result.output == cached_path("openvino", checkpoint, ".xml")
    assert create_engine(checkpoint, backend="openvino").precision == "f32"
    result.output.unlink()
    assert create_engine(checkpoint, backend="openvino").precision == fast


def test_default_model_needs_an_output_when_untrained(tmp_path):
    from engines.files import DEFAULT_WEIGHTS

    if DEFAULT_WEIGHTS.exists():
        pytest.skip("trained default weights are installed")
    with pytest.raises(RealtimeError, match="pass --model CKPT, or -o FILE"):
        convert(ConvertSettings(format="onnx"))
    assert read_onnx_meta(convert(ConvertSettings(output=tmp_path / "u.onnx")).output).trained is False


def test_compare_with_torch_flags_a_different_model(net, crops, reference):
    from engines.registry import Engine

    class Skewed(Engine):  # torch's answer, 5% off
        name = "skewed"

        def _infer(self, x):
            return reference[0] * 0.95 + 0.05 / 8, reference[1], reference[2]

    check = compare_with_torch(Skewed(net.meta), net, crops)
    assert check.age_agreement == 1.0 and check.max_abs_diff > 1e-2
    assert not check.ok and "FAILED" in str(check)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model="missing.safetensors"), "model file not found: missing.safetensors"),
        (dict(model="{onnx}"), "convert reads a .safetensors checkpoint"),
        (dict(output="m.pt"), "unknown output type"),
        (dict(output="m.onnx", format="openvino"), "that suffix is for onnx, not --format openvino"),
        (dict(format="coreml"), "choose one of tensorrt, onnx, openvino"),
        (dict(format="onnx", fp16=True), "the ONNX export stays fp32"),
        (dict(format="openvino", int8=True, calib="{dir}"), "--int8 is for TensorRT"),
        (dict(format="onnx", converter="torch2trt"), "--converter torch2trt builds TensorRT"),
        (dict(format="onnx", opt_batch=16, max_batch=8), "need 1 <= opt <= max"),
        (dict(format="onnx", check=True), "--check needs real face crops"),
        (dict(format="onnx", check=True, check_images="nowhere"), "--check-images nowhere: not a folder"),
    ],
)
def test_settings_errors(kwargs, message, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    kwargs = {k: v.format(onnx=onnx, dir=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(RealtimeError, match=message) as e:
        ConvertSettings(**kwargs)
    assert "\n" not in str(e.value)


def test_tensorrt_settings_errors(tensorrt_gpu, tmp_path):
    if tensorrt_gpu:
        with pytest.raises(RealtimeError, match="--int8 needs calibration images"):
            ConvertSettings(int8=True)
        return
    for kwargs in (dict(), dict(output=tmp_path / "m.engine", fp16=True), dict(int8=True, calib=tmp_path)):
        with pytest.raises(RealtimeError, match=r"TensorRT is not installed: pip install 'realtime\[tensorrt\]'"):
            ConvertSettings(**kwargs)


def test_load_face_crops(faces_dir, net, tmp_path):
    crops = load_face_crops(faces_dir, net.meta, 5)
    assert crops.shape == (5, 3, 112, 112) and crops.dtype == np.float32
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RealtimeError, match="no face crop images"):
        load_face_crops(tmp_path, net.meta)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(RealtimeError, match="none of its images could be read"):
        load_face_crops(tmp_path, net.meta)
