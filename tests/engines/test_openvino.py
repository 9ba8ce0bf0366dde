"""OpenVINO specifics: IR metadata and precision (the interface is in test_backends)."""

from __future__ import annotations

import pytest

from engines.registry import create_engine
from realtime.errors import RealtimeError


@pytest.fixture
def ov(require_backend):
    require_backend("openvino")
    import openvino

    return openvino


def test_ir_without_metadata_is_refused(ov, onnx_file, tmp_path):
    ov.save_model(ov.convert_model(str(onnx_file)), str(tmp_path / "plain.xml"))
    with pytest.raises(RealtimeError, match="without realtime model metadata; convert it with `realtime convert --format openvino`"):
        create_engine(tmp_path / "plain.xml", backend="openvino")


def test_ir_of_another_shape_fails_at_load(ov, tmp_path):
    from engines.meta import ModelMeta
    from engines.openvino import save_ir
    from tests.helpers import onnx_of_another_shape

    xml = save_ir(onnx_of_another_shape(tmp_path / "other.onnx"), tmp_path / "other.xml", ModelMeta())
    with pytest.raises(RealtimeError, match=r"its graph does not match its metadata \(input should be \(N, 3, 112, 112\), "
                                            r"it is crops \[None, 3, 64, 64\]; output age_probs should be \(N, 8\)"):
        create_engine(xml, backend="openvino")


def test_save_ir_wants_xml(ov, onnx_file, net, tmp_path):
    from engines.openvino import save_ir

    with pytest.raises(RealtimeError, match="use -o model.xml"):
        save_ir(onnx_file, tmp_path / "model.bin", net.meta)


def test_precision(ov, onnx_file, net, crops, reference):
    from engines.openvino import OpenVinoEngine, reduced_precision

    exact = OpenVinoEngine(onnx_file)  # ONNX and checkpoints: f32 unless asked otherwise
    assert exact.meta == net.meta and exact.precision == "f32"
    # f32 on another CPU runs other kernels (AVX2, AVX-512, AMX) that sum in another
    # order: measured max differences 5.0e-6 (Xeon with AMX) and 1.07e-5 (another x86).
    # 1e-4 leaves a 10x margin and is still 100x below any reduced precision (bf16 >= 1e-2).
    assert abs(exact.infer(crops).age_probs - reference[0]).max() < 1e-4
    fast = OpenVinoEngine(onnx_file, precision="reduced")  # the CPU's native reduced precision
    assert fast.precision == reduced_precision(ov.Core())
    assert (fast.infer(crops).gender_probs.argmax(1) == reference[1].argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="precision must be"):
        OpenVinoEngine(onnx_file, precision="int4")
