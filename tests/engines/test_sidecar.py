"""The TensorRT engine's JSON sidecar: written, read back, validated, and the target check."""

from __future__ import annotations

import json

import pytest

from engines.errors import RealtimeError
from engines.meta import ModelMeta
from engines.sidecar import Sidecar, Target, check_target, read_sidecar, sidecar_path, write_sidecar

SHA = "ab" * 32


def sidecar(**kw) -> Sidecar:
    base = dict(meta=ModelMeta(trained=True), tensorrt_version="10.3.0", gpu_name="NVIDIA H200", compute_capability="9.0",
                checkpoint="m.safetensors", checkpoint_sha256=SHA, onnx="m.onnx")
    return Sidecar(**{**base, **kw})


def test_written_beside_the_engine_and_read_back_equal(tmp_path):
    engine = tmp_path / "m.engine"
    path = write_sidecar(engine, sidecar(precision="int8"))
    assert path == sidecar_path(engine) == tmp_path / "m.json"
    back = read_sidecar(engine)
    assert back == sidecar(precision="int8") and back.target == Target("10.3.0", "NVIDIA H200", "9.0")


@pytest.mark.parametrize("change, says", [
    ({"precision": "fp8"}, "precision must be one of fp32, fp16, int8"),
    ({"compute_capability": "sm90"}, "compute_capability must look like '8.9'"),
    ({"max_batch": 4, "opt_batch": 8}, "1 <= min <= opt <= max"),
    ({"checkpoint_sha256": "xyz"}, "checkpoint_sha256 must be 64 hex digits"),
    ({"converter": "magic"}, "converter must be one of onnx, torch2trt"),
    ({"gpu_name": ""}, "gpu_name must be a non-empty string"),
])  # fmt: skip
def test_a_damaged_sidecar_is_one_line_with_the_fix(tmp_path, change, says):
    data = json.loads(sidecar().to_json())
    data.update(change)
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(RealtimeError, match="rebuild the engine with `realtime convert`") as e:
        read_sidecar(tmp_path / "m.engine")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_missing_unknown_and_newer_sidecars(tmp_path):
    with pytest.raises(RealtimeError, match="its sidecar m.json is missing"):
        read_sidecar(tmp_path / "m.engine")
    data = json.loads(sidecar().to_json())
    del data["gpu_name"]
    data["colour"] = "red"
    with pytest.raises(RealtimeError, match=r"missing \['gpu_name'\], unknown \['colour'\]"):
        Sidecar.from_json(json.dumps(data))
    with pytest.raises(RealtimeError, match="newer than this realtime reads"):
        Sidecar.from_json(json.dumps({**json.loads(sidecar().to_json()), "format_version": 99}))


def test_check_target_names_what_differs():
    side = sidecar()
    check_target(side, Target("10.3.0", "NVIDIA H200", "9.0"), "m.engine")  # the same machine: fine
    with pytest.raises(RealtimeError, match="built with TensorRT 10.3.0, this machine has TensorRT 10.4.0"):
        check_target(side, Target("10.4.0", "NVIDIA H200", "9.0"), "m.engine")
    with pytest.raises(RealtimeError, match=r"built for NVIDIA H200 \(sm 9.0\), this GPU is NVIDIA L4 \(sm 8.9\); "
                                            r"rebuild it here: realtime convert --model m.safetensors -o m.engine"):
        check_target(side, Target("10.3.0", "NVIDIA L4", "8.9"), "m.engine")
