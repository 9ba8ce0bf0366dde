"""Model-file resolution: which file each backend runs (a checkpoint, its ONNX export,
the file beside a TensorRT engine, a cached conversion).

The default model ships as ``weights/default.onnx`` too, exported from
``weights/default.safetensors`` by::

    realtime convert --format onnx -o engines/weights/default.onnx

which records the checkpoint's sha256 in the ONNX file, so a stale export is noticed.
Turning a ``.safetensors`` checkpoint into ONNX needs torch (``realtime[train]``);
the readers it uses (:mod:`engines.files`) do not.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from engines.errors import RealtimeError, require
from engines.files import (
    DEFAULT_ONNX,
    DEFAULT_WEIGHTS,
    ENGINE_SUFFIXES,
    SOURCE_KEY,
    cached_path,
    checkpoint_file,
    file_sha256,
    onnx_metadata,
)

log = logging.getLogger(__name__)


def engine_source(path: Path, want: str) -> Path:
    """What another backend runs instead of the TensorRT engine ``path``: the ONNX file
    written beside it (``want="onnx"``, falling back to the checkpoint) or the
    checkpoint it was built from, if unchanged (``want="checkpoint"``)."""
    from engines.sidecar import read_sidecar

    side = read_sidecar(path)
    if want == "onnx" and side.onnx and (path.parent / side.onnx).is_file():
        return path.parent / side.onnx
    checkpoint = Path(side.checkpoint) if side.checkpoint else None
    if checkpoint is not None and checkpoint.is_file() and file_sha256(checkpoint) == side.checkpoint_sha256:
        return checkpoint
    wanted = "its ONNX file or checkpoint" if want == "onnx" else "its checkpoint"
    raise RealtimeError(
        f"{path}: a TensorRT engine runs only on the tensorrt backend, and {wanted} is not beside it "
        "or has changed; pass the .safetensors checkpoint or .onnx file instead"
    )


def load_net(path: Path | None):
    """The torch network of a checkpoint (None: the default weights); needs torch."""
    require("torch", f"{path or 'the default checkpoint'}: running a .safetensors checkpoint",
            hint="or pass its ONNX export (`realtime convert --format onnx`)")
    from engines.model import default_model, load_checkpoint

    if path is None:
        return default_model()
    if path.suffix in ENGINE_SUFFIXES:
        path = engine_source(path, "checkpoint")
    elif path.suffix in (".onnx", ".xml"):
        raise RealtimeError(f"{path}: this backend needs a .safetensors checkpoint, not {path.suffix[1:].upper()}")
    return load_checkpoint(path)


def default_onnx() -> Path | None:
    """The shipped ONNX export of the default weights, if it was exported from them."""
    if not DEFAULT_ONNX.is_file():
        return None
    if not DEFAULT_WEIGHTS.is_file() or onnx_metadata(DEFAULT_ONNX).get(SOURCE_KEY) == file_sha256(DEFAULT_WEIGHTS):
        return DEFAULT_ONNX
    log.warning("%s was not exported from %s; regenerate it: realtime convert --format onnx -o %s",
                DEFAULT_ONNX.name, DEFAULT_WEIGHTS.name, DEFAULT_ONNX)
    return None if importlib.util.find_spec("torch") is not None else DEFAULT_ONNX


def onnx_for(path: Path | None) -> Path:
    """An ONNX file for ``path``: itself if it is ONNX, the ONNX beside a TensorRT
    engine, the shipped export of the default weights, else an export cached by the
    checkpoint's sha256 (the untrained fallback exports to a temporary file)."""
    import tempfile

    if path is not None and path.suffix in ENGINE_SUFFIXES:
        path = engine_source(path, "onnx")
    if path is not None and path.suffix == ".onnx":
        return path
    if path is not None and path.suffix == ".xml":
        raise RealtimeError(f"{path}: an OpenVINO IR runs only on the openvino backend; pass the .onnx or .safetensors file")
    if path is None and (shipped := default_onnx()) is not None:
        return shipped
    target = cached_path("onnx", path, ".onnx")
    if target is not None and target.exists():
        return target
    net = load_net(path)
    from engines.export import export_onnx

    if target is None:
        return export_onnx(net, Path(tempfile.mkdtemp(prefix="realtime-")) / "untrained.onnx")
    return export_onnx(net, target, source_sha256=file_sha256(checkpoint_file(path)))
