"""The engine interface, checked on every registered backend against eager PyTorch."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from engines.registry import create_engine, list_backends, register_backend
from engines.sidecar import Sidecar, write_sidecar
from realtime.errors import RealtimeError

#: Max abs difference of probabilities from torch, per backend at fp32.
TOLERANCE = {"torch": 1e-5, "onnxruntime": 1e-4, "openvino": 1e-4, "tensorrt": 1e-3}
#: ... and at the reduced precisions OpenVINO picks by default where the CPU has them.
#: The test model's spread heads magnify rounding: a trained model stays within 3e-2.
REDUCED = {"bf16": 1e-1, "f16": 3e-2}


def tolerance(engine) -> float:
    return REDUCED.get(getattr(engine, "precision", ""), TOLERANCE.get(engine.name, 1e-3))


def agreement(engine) -> float:
    """Fraction of crops whose argmax must match torch's (near ties flip at reduced precision)."""
    return 0.9 if getattr(engine, "precision", "") in REDUCED else 1.0


@pytest.fixture(scope="module", params=list_backends())
def engine(request, checkpoint, tmp_path_factory, require_backend):
    name = request.param
    require_backend(name)
    model = checkpoint
    if name == "tensorrt":  # TensorRT runs built engines: build an fp32 one for this GPU
        from engines.convert import ConvertSettings, convert

        out = tmp_path_factory.mktemp("trt") / "model.engine"
        model = convert(ConvertSettings(model=checkpoint, output=out, max_batch=16)).output
    return create_engine(model, backend=name)


def test_outputs_match_torch(engine, crops, reference):
    out = engine.infer(crops)
    n, a, g = len(crops), len(engine.meta.age_labels), len(engine.meta.gender_labels)
    assert out.age_probs.shape == (n, a) and out.gender_probs.shape == (n, g) and out.age_years.shape == (n,)
    assert all(x.dtype == np.float32 for x in out)
    np.testing.assert_allclose(out.age_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(out.gender_probs.sum(1), 1, atol=1e-5)
    tol = tolerance(engine)
    assert np.abs(out.age_probs - reference[0]).max() <= tol
    assert np.abs(out.gender_probs - reference[1]).max() <= tol
    assert np.abs(out.age_years - reference[2]).max() <= 200 * tol
    assert (out.age_probs.argmax(1) == reference[0].argmax(1)).mean() >= agreement(engine)
    assert (out.gender_probs.argmax(1) == reference[1].argmax(1)).mean() >= agreement(engine)


def test_batches_of_any_size(engine, crops, reference):
    """Empty, single and odd batches (TensorRT: more than its profile's max of 16)."""
    empty = engine.infer(crops[:0])
    assert empty.age_probs.shape == (0, len(engine.meta.age_labels)) and empty.age_years.shape == (0,)
    one = engine.infer(crops[3:4])
    np.testing.assert_allclose(one.age_probs, reference[0][3:4], atol=tolerance(engine))
    many = engine.infer(np.concatenate([crops, crops[:-5]]))  # 43 crops
    np.testing.assert_allclose(many.gender_probs[len(crops):], reference[1][:-5], atol=tolerance(engine))


def test_meta_and_bad_input(engine, net):
    assert engine.meta == net.meta
    with pytest.raises(ValueError, match="crops must have shape"):
        engine.infer(np.zeros((2, 3, 64, 64), np.float32))


# ------------------------------------------------------------------ choosing a backend


@pytest.fixture
def foreign_engine(tmp_path, net, checkpoint, onnx_file):
    """A fake .engine built 'elsewhere': sidecar naming another TensorRT and GPU, the
    ONNX export and checkpoint beside it, as `realtime convert` leaves them."""
    from engines.files import file_sha256

    path = tmp_path / "model.engine"
    path.write_bytes(b"not a real engine")
    shutil.copy(onnx_file, tmp_path / "model.onnx")
    write_sidecar(path, Sidecar(meta=net.meta, tensorrt_version="9.9.9", gpu_name="Some GPU", compute_capability="7.5",
                                checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint), onnx="model.onnx"))
    return path


def test_auto_falls_back_from_an_engine_built_elsewhere(foreign_engine, tensorrt_gpu, caplog, crops, reference):
    """With TensorRT and a GPU the engine is refused (built with 9.9.9 for another GPU);
    without, TensorRT is skipped: either way the ONNX file beside it runs."""
    with caplog.at_level(logging.INFO, logger="engines.registry"):
        engine = create_engine(foreign_engine)
    assert engine.name == next(n for n in list_backends(available_only=True) if n != "tensorrt")
    if tensorrt_gpu:
        assert "built with TensorRT 9.9.9, this machine has TensorRT" in caplog.text
    else:
        assert "tensorrt not installed" in caplog.text
    assert f"engine: {engine.name} (auto" in caplog.text
    np.testing.assert_allclose(engine.infer(crops).age_probs, reference[0], atol=tolerance(engine))


def test_auto_skips_tensorrt_for_a_checkpoint_without_a_built_engine(checkpoint, tensorrt_gpu, caplog):
    with caplog.at_level(logging.INFO, logger="engines.registry"):
        engine = create_engine(checkpoint)
    assert engine.name != "tensorrt"
    if tensorrt_gpu:
        assert "no TensorRT engine built for" in caplog.text and "realtime convert" in caplog.text
    else:
        assert "tensorrt not installed" in caplog.text


@pytest.fixture
def out_of_memory_backend():
    """A real backend, registered like any plugin, whose load runs out of memory (numpy
    cannot allocate an exabyte): the kind of failure that is not our RealtimeError."""
    from engines import registry

    @register_backend("exabyte", requires="numpy")
    def load(path):
        np.empty(1 << 60, np.float32)

    yield "exabyte"
    registry._BACKENDS.pop("exabyte")
    registry._REQUIRES.pop("exabyte")


def test_any_load_failure_falls_back_with_one_line(out_of_memory_backend, caplog):
    with caplog.at_level(logging.INFO, logger="engines.registry"):
        engine = create_engine(None, backend=[out_of_memory_backend, "onnxruntime"])
    assert engine.name == "onnxruntime"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert warnings[0].getMessage().startswith("backend exabyte cannot load this model: MemoryError")
    assert "exabyte failed" in caplog.text


def test_a_load_failure_asked_for_by_name_is_not_hidden(out_of_memory_backend):
    with pytest.raises(MemoryError):
        create_engine(None, backend=out_of_memory_backend)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_other_backends_run_an_engine_from_what_lies_beside_it(foreign_engine, backend, crops, reference):
    out = create_engine(foreign_engine, backend=backend).infer(crops)
    np.testing.assert_allclose(out.gender_probs, reference[1], atol=1e-4)


def test_other_backends_refuse_an_engine_alone(foreign_engine):
    foreign_engine.with_suffix(".onnx").unlink()
    foreign_engine.parent.joinpath("moved.safetensors").write_bytes(b"")
    side = json.loads(foreign_engine.with_suffix(".json").read_text())
    side["checkpoint"] = str(foreign_engine.parent / "gone.safetensors")
    foreign_engine.with_suffix(".json").write_text(json.dumps(side))
    for backend in ("onnxruntime", "torch"):
        with pytest.raises(RealtimeError, match="runs only on the tensorrt backend") as e:
            create_engine(foreign_engine, backend=backend)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "suffix, backend, message",
    [
        (".xml", "onnxruntime", "runs only on the openvino backend"),
        (".onnx", "torch", "needs a .safetensors checkpoint, not ONNX"),
        (".engine", "onnxruntime", "sidecar model.json is missing"),
    ],
)
def test_wrong_file_for_a_backend(tmp_path, onnx_file, suffix, backend, message):
    path = tmp_path / f"model{suffix}"
    if suffix == ".onnx":
        shutil.copy(onnx_file, path)
    else:
        path.write_bytes(b"x")
    with pytest.raises(RealtimeError, match=message):
        create_engine(path, backend=backend)


def test_tensorrt_asked_for_by_name_without_it(checkpoint, tensorrt_gpu):
    if tensorrt_gpu:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(RealtimeError, match="tensorrt.* is not installed"):
        create_engine(checkpoint, backend="tensorrt")


def test_flip_averaging_is_the_mean_of_a_crop_and_its_mirror(faces_dir):
    from engines.backends import FlipAveraged
    from engines.registry import create_engine
    from engines.convert import load_face_crops

    base = create_engine(None, "onnxruntime")
    crops = load_face_crops(faces_dir, base.meta, 5)  # at the default model's own input size
    flipped = FlipAveraged(base)
    out = flipped.infer(crops[:5])
    plain, mirror = base.infer(crops[:5]), base.infer(np.ascontiguousarray(crops[:5, ..., ::-1]))
    np.testing.assert_allclose(out.age_probs, (plain.age_probs + mirror.age_probs) / 2, atol=1e-6)
    np.testing.assert_allclose(out.gender_probs.sum(1), 1, atol=1e-5)
    assert flipped.name == "onnxruntime+flip" and flipped.meta == base.meta
    assert len(flipped.infer(crops[:0]).age_probs) == 0


def test_onnxruntime_keeps_no_memory_plan_per_batch_size():
    """Batch sizes change from frame to frame; a memory pattern per size only holds
    memory (+18 MB over batches 2-20) without running faster."""
    from engines.registry import create_engine

    assert create_engine(None, "onnxruntime").session.get_session_options().enable_mem_pattern is False
