"""engines.files: the torch-free readers of model files (hashes, metadata, graph shapes,
the cache), on real files."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from engines.errors import RealtimeError
from engines.files import (
    DEFAULT_ONNX,
    DEFAULT_WEIGHTS,
    META_KEY,
    cache_dir,
    cached_path,
    check_graph_shapes,
    checkpoint_file,
    file_sha256,
    read_checkpoint_meta,
    read_onnx_meta,
)
from engines.meta import ModelMeta
from tests.helpers import ROOT, onnx_of_another_shape


def test_sha256_and_the_cache_layout(tmp_path, monkeypatch):
    data = tmp_path / "w.bin"
    data.write_bytes(b"x" * 3_000_000)  # more than one 1 MiB block
    assert file_sha256(data) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    monkeypatch.setenv("REALTIME_CACHE", str(tmp_path / "cache"))
    assert cache_dir("onnx") == tmp_path / "cache" / "onnx" and (tmp_path / "cache" / "onnx").is_dir()
    assert cached_path("onnx", data, ".onnx") == tmp_path / "cache" / "onnx" / f"{file_sha256(data)[:32]}.onnx"
    assert checkpoint_file(data) == data and checkpoint_file(None) == DEFAULT_WEIGHTS


def test_checkpoint_metadata_is_read_without_torch(tmp_path):
    meta = ModelMeta(input_size=64, trained=True, trained_on="test")
    path = tmp_path / "m.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path), metadata={META_KEY: meta.to_json()})
    assert read_checkpoint_meta(path) == meta
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(plain))
    with pytest.raises(RealtimeError, match="without realtime model metadata"):
        read_checkpoint_meta(plain)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(RealtimeError, match="not a realtime checkpoint"):
        read_checkpoint_meta(garbage)
    with pytest.raises(RealtimeError, match="model file not found"):
        read_checkpoint_meta(tmp_path / "none.safetensors")


def test_onnx_metadata_and_a_graph_that_does_not_match_it(tmp_path):
    assert read_onnx_meta(DEFAULT_ONNX) == read_checkpoint_meta(DEFAULT_WEIGHTS)
    with pytest.raises(RealtimeError, match="its graph does not match its metadata") as e:
        read_onnx_meta(onnx_of_another_shape(tmp_path / "other.onnx"))
    assert "input should be (N, 3, 112, 112)" in str(e.value) and "output age_probs should be (N, 8)" in str(e.value)
    with pytest.raises(RealtimeError, match="an ONNX export has no trainable weights"):
        read_checkpoint_meta(DEFAULT_ONNX)


def test_graph_shapes_accept_a_dynamic_batch_and_years_as_n_or_n_by_1():
    meta = ModelMeta()
    inputs = [("crops", ["batch", 3, 112, 112])]
    for years in (["batch"], ["batch", 1]):
        check_graph_shapes(inputs, {"age_probs": ["batch", 8], "gender_probs": [None, 2], "age_years": years}, meta, "m")
    with pytest.raises(RealtimeError, match="output gender_probs is missing"):
        check_graph_shapes(inputs, {"age_probs": ["batch", 8], "age_years": ["batch"]}, meta, "m")


def test_the_readers_import_no_torch():
    code = ("import sys\nfrom engines.files import read_onnx_meta, read_checkpoint_meta, DEFAULT_ONNX, DEFAULT_WEIGHTS\n"
            "import engines.registry, engines.sidecar\nread_onnx_meta(DEFAULT_ONNX); read_checkpoint_meta(DEFAULT_WEIGHTS)\n"
            "print([m for m in ('torch', 'onnx', 'timm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
