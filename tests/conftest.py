"""Shared test fixtures: real media from ../shared (skipped with a reason when absent)
and an isolated cache directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
SAMPLES = ROOT / "samples"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _user_detector_models() -> Path | None:
    """The folder where ``realtime models fetch`` (the README's set-up) put both
    detector models: the user cache, read here before the tests move the cache away."""
    from realtime.detector_models import DETECTOR_MODELS, model_cache_dir

    folder = model_cache_dir()
    return folder if all((folder / m.filename).is_file() for m in DETECTOR_MODELS.values()) else None


if (SHARED / "models").is_dir():
    os.environ.setdefault("REALTIME_MODELS", str(SHARED / "models"))
elif not os.environ.get("REALTIME_MODELS") and (_fetched := _user_detector_models()) is not None:
    os.environ["REALTIME_MODELS"] = str(_fetched)


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared data is not beside this checkout)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep ONNX exports and fetched models out of the user's real cache."""
    os.environ["REALTIME_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def detector_models() -> Path:
    """The folder holding both MediaPipe detector models."""
    models = os.environ.get("REALTIME_MODELS")
    if not models or not Path(models).is_dir():
        pytest.skip("needs the MediaPipe detector models: run `realtime models fetch`, or put ../shared/models beside the checkout")
    return Path(models)


@pytest.fixture(scope="session")
def analyzer(detector_models):
    from realtime.analyzer import Analyzer, AnalyzerSettings

    a = Analyzer(AnalyzerSettings(backend="onnxruntime"))
    yield a
    a.close()


def x264_settings(path: Path) -> bytes:
    """The options line libx264 writes into a video it encodes (an SEI in the first
    keyframe), e.g. ``b"x264 - core 165 ... threads=1 ... rc_lookahead=5 ..."``."""
    data = Path(path).read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\0", start)]


def onnx_of_another_shape(path: Path) -> Path:
    """A valid ONNX graph (ONNX Runtime and OpenVINO load it) whose input and outputs are
    not what its realtime metadata (the default ModelMeta: 112 px, 8 age groups) says:
    64 px crops, 3 age probabilities."""
    import onnx
    from onnx import TensorProto, helper

    from engines.meta import ModelMeta

    crops = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 3, 64, 64])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", k]) for n, k in (("age_probs", 3), ("gender_probs", 2))]
    years = helper.make_tensor_value_info("age_years", TensorProto.FLOAT, ["batch"])
    ints = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("zero", 0), ("two", 2), ("one", 1))]
    nodes = [helper.make_node("ReduceMean", ["crops"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("Identity", ["pooled"], ["age_probs"]),
             helper.make_node("Slice", ["pooled", "zero", "two", "one"], ["gender_probs"]),
             helper.make_node("ReduceMean", ["pooled"], ["age_years"], axes=[1], keepdims=0)]  # fmt: skip
    graph = helper.make_graph(nodes, "other", [crops], [*outs, years], initializer=ints)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    entry = proto.metadata_props.add()
    entry.key, entry.value = "realtime.meta", ModelMeta().to_json()
    onnx.save(proto, str(path))
    return path
