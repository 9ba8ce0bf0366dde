"""TensorRT sidecars, the refusal of engines built elsewhere, batch planning; building
and running real engines where TensorRT and a GPU are present."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from engines.meta import ModelMeta
from engines.sidecar import Sidecar, Target, check_target, read_sidecar, sidecar_path, write_sidecar
from engines.tensorrt import calibration_batches, check_tensorrt_version, plan_chunks
from realtime.errors import RealtimeError

SHA = "ab" * 32
GOOD = Sidecar(meta=ModelMeta(), tensorrt_version="10.3.0", gpu_name="NVIDIA L4", compute_capability="8.9",
               precision="fp16", checkpoint="/m.safetensors", checkpoint_sha256=SHA, onnx="model.onnx")


def edited(**changes) -> str:
    data = json.loads(GOOD.to_json())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "model.engine"
    assert write_sidecar(engine, GOOD) == sidecar_path(engine) == tmp_path / "model.json"
    assert read_sidecar(engine) == GOOD
    data = json.loads(sidecar_path(engine).read_text())
    assert data["meta"]["input_size"] == 112 and data["meta"]["age_labels"][0] == "0-2"  # the ModelMeta, readable


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.to_json(), None),
        (edited(checkpoint=None, checkpoint_sha256=None, onnx=None), None),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (edited(tensorrt_version=...), r"missing \['tensorrt_version'\]"),
        (edited(colour="blue"), r"unknown \['colour'\]"),
        (edited(format_version=99), "newer than this realtime reads"),
        (edited(meta="x"), "'meta' must be a JSON object"),
        (edited(meta={"arch": "a", "size": 3}), r"unknown model metadata fields \['size'\]"),
        (edited(precision="fp8"), "precision must be one of"),
        (edited(compute_capability="sm89"), "compute_capability must look like"),
        (edited(gpu_name=""), "gpu_name must be a non-empty string"),
        (edited(min_batch=9), "1 <= min <= opt <= max"),
        (edited(max_batch=4), "1 <= min <= opt <= max"),
        (edited(max_batch="32"), "1 <= min <= opt <= max"),
        (edited(checkpoint_sha256="xyz"), "64 hex digits"),
        (edited(converter="magic"), "converter must be one of"),
    ],
)
def test_sidecar_validation(text, message):
    if message is None:
        assert Sidecar.from_json(text, "model.json").meta == GOOD.meta
        return
    with pytest.raises(RealtimeError, match=message) as e:
        Sidecar.from_json(text, "model.json")
    assert str(e.value).startswith("model.json: ") and "\n" not in str(e.value)


def test_missing_sidecar_is_one_line(tmp_path):
    with pytest.raises(RealtimeError, match="its sidecar model.json is missing; rebuild the engine"):
        read_sidecar(tmp_path / "model.engine")


@pytest.mark.parametrize(
    "current, message",
    [
        (Target("10.3.0", "NVIDIA L4", "8.9"), None),
        (Target("10.4.0", "NVIDIA L4", "8.9"), "built with TensorRT 10.3.0, this machine has TensorRT 10.4.0"),
        (Target("10.3.0", "NVIDIA A100", "8.0"), r"built for NVIDIA L4 \(sm 8.9\), this GPU is NVIDIA A100 \(sm 8.0\)"),
        (Target("10.3.0", "NVIDIA L40S", "8.9"), "built for NVIDIA L4"),
    ],
)
def test_engines_built_elsewhere_are_refused(current, message):
    if message is None:
        check_target(GOOD, current, "m.engine")
        return
    with pytest.raises(RealtimeError, match=message) as e:
        check_target(GOOD, current, "m.engine")
    assert "rebuild it here: realtime convert --model /m.safetensors -o m.engine" in str(e.value)


@pytest.mark.parametrize(
    "n, lo, hi, chunks",
    [
        (1, 1, 32, [(0, 1, 1)]),
        (32, 1, 32, [(0, 32, 32)]),
        (70, 1, 32, [(0, 32, 32), (32, 64, 32), (64, 70, 6)]),
        (3, 4, 8, [(0, 3, 4)]),  # padded up to the profile's minimum
        (10, 4, 8, [(0, 8, 8), (8, 10, 4)]),
        (0, 1, 8, []),
    ],
)
def test_plan_chunks(n, lo, hi, chunks):
    assert plan_chunks(n, lo, hi) == chunks
    assert sum(stop - start for start, stop, _ in chunks) == n


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0", "10.13.3.9"])
def test_tensorrt_10_is_accepted(version):
    check_tensorrt_version(version)


@pytest.mark.parametrize("version, gone", [("11.0.0", "removed the FP16/INT8 builder flags"), ("8.6.1", "lacks the tensor API")])
def test_other_tensorrt_versions_are_refused_in_one_line(version, gone):
    with pytest.raises(RealtimeError, match=gone) as e:
        check_tensorrt_version(version)
    assert "pip install 'tensorrt>=10,<11'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("n, batch, sizes", [(40, 16, [16, 16, 16]), (16, 16, [16]), (5, 16, [5]), (33, 32, [32, 32])])
def test_calibration_batches_are_full_and_use_every_crop(n, batch, sizes):
    crops = np.arange(n, dtype=np.float64)[:, None, None, None] * np.ones((1, 3, 4, 4))
    batches = calibration_batches(crops, batch)
    assert [len(b) for b in batches] == sizes  # every batch is what get_batch_size() reports
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    seen = np.concatenate([b[:, 0, 0, 0] for b in batches])
    assert set(seen) == set(range(n))  # the last batch is filled up from the start, nothing dropped
    np.testing.assert_array_equal(seen[:n], np.arange(n))


def test_calibration_needs_crops():
    with pytest.raises(RealtimeError, match="calibration crops"):
        calibration_batches(np.zeros((0, 3, 4, 4), np.float32), 16)


# ----------------------------------------------------------- with TensorRT and a GPU


@pytest.fixture(scope="module")
def trained(faces_dir):
    """The shipped trained model, its face crops and eager PyTorch outputs on them. fp16
    bounds are set on it: emulated with PyTorch's float16 on 512 real crops, its age
    probabilities moved by at most 1.7e-3 (the single network before it: 2.8e-3), while the random test net's spread heads
    amplify the same rounding to 5.1e-2 (that net would fail a 2e-2 bound by chance)."""
    import torch

    from engines.convert import load_face_crops
    from engines.files import DEFAULT_WEIGHTS
    from engines.model import ProbabilityModel, load_checkpoint

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"the trained default model is not installed at {DEFAULT_WEIGHTS}")
    net = load_checkpoint(DEFAULT_WEIGHTS)
    crops = load_face_crops(faces_dir, net.meta, 24)
    with torch.inference_mode():
        reference = tuple(t.numpy() for t in ProbabilityModel(net)(torch.from_numpy(crops)))
    return DEFAULT_WEIGHTS, net.meta, crops, reference


@pytest.mark.slow
def test_trained_model_keeps_to_the_fp16_bound_in_float16(trained):
    """What an fp16 engine does to the shipped model, emulated on the CPU with PyTorch's
    float16: convert's fp16 check bound (and the GPU test above) must hold with room."""
    import torch

    from engines.convert import CHECK_TOLERANCE
    from engines.model import ProbabilityModel, load_checkpoint

    _, _, crops, reference = trained
    half = ProbabilityModel(load_checkpoint(trained[0])).half()
    with torch.inference_mode():
        age, gender, _ = (t.float().numpy() for t in half(torch.from_numpy(crops).half()))
    worst = max(np.abs(age - reference[0]).max(), np.abs(gender - reference[1]).max())
    assert 0 < worst < CHECK_TOLERANCE["fp16"] / 2  # measured 1.7e-3 on 512 crops; 0 would mean float16 never ran


@pytest.fixture(scope="module")
def small_engine(trained, tmp_path_factory, require_backend):
    """An fp16 engine of the trained model with a profile of at most 4 crops, and its ConvertResult."""
    require_backend("tensorrt")
    from engines.convert import ConvertSettings, convert

    out = tmp_path_factory.mktemp("trt") / "small.engine"
    return convert(ConvertSettings(model=trained[0], output=out, fp16=True, opt_batch=2, max_batch=4))


def test_built_engine_has_files_and_sidecar(small_engine, trained):
    import tensorrt

    side = read_sidecar(small_engine.output)
    assert side.meta == trained[1] and side.precision == "fp16" and side.max_batch == 4
    assert side.tensorrt_version == tensorrt.__version__ and side.checkpoint == str(trained[0].resolve())
    assert small_engine.output.with_suffix(".onnx").is_file()


def test_engine_splits_batches_over_its_profile(small_engine, trained):
    from engines.registry import create_engine

    _, _, crops, reference = trained
    engine = create_engine(small_engine.output, backend="tensorrt")
    assert engine.max_batch == 4
    out = engine.infer(crops[:11])  # 4 + 4 + 3
    assert np.abs(out.age_probs - reference[0][:11]).max() < 2e-2  # convert's fp16 check bound; 2.8e-3 emulated


def test_engine_for_another_gpu_falls_back(small_engine, tmp_path, crops):
    from engines.registry import create_engine

    for name in ("small.engine", "small.onnx"):
        (tmp_path / name).write_bytes(small_engine.output.with_name(name).read_bytes())
    side = dataclasses.replace(read_sidecar(small_engine.output), gpu_name="Another GPU")
    write_sidecar(tmp_path / "small.engine", side)
    assert create_engine(tmp_path / "small.engine").name != "tensorrt"


@pytest.mark.parametrize("opt_batch, max_batch", [(8, 32), (32, 64)])  # the calibrator's 16 rows and the profile differ
def test_int8_engine(checkpoint, faces_dir, tmp_path, crops, reference, require_backend, opt_batch, max_batch):
    require_backend("tensorrt")
    from engines.convert import ConvertSettings, convert

    result = convert(ConvertSettings(model=checkpoint, output=tmp_path / "m.engine", int8=True, calib=faces_dir,
                                     check=True, check_images=faces_dir, opt_batch=opt_batch, max_batch=max_batch))
    assert read_sidecar(result.output).precision == "int8"
    assert result.check.gender_agreement > 0.8


def test_torch2trt_converter(checkpoint, tmp_path, crops, reference, require_backend):
    require_backend("tensorrt")
    pytest.importorskip("torch2trt", reason="torch2trt is not installed (github.com/NVIDIA-AI-IOT/torch2trt)")
    from engines.registry import create_engine
    from engines.convert import ConvertSettings, convert

    out = convert(ConvertSettings(model=checkpoint, output=tmp_path / "m.engine", converter="torch2trt")).output
    assert np.abs(create_engine(out, backend="tensorrt").infer(crops).age_probs - reference[0]).max() < 1e-3
