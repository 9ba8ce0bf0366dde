"""Model files without torch: where they live, their hashes and the metadata inside
them. Everything here runs on the runtime install (``pip install .``, ONNX Runtime, no
torch); which file each backend runs is :mod:`engines.resolve`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from engines.errors import RealtimeError
from engines.meta import ModelMeta


#: The default weights shipped with the package (see MODEL_CARD.md) and their ONNX export.
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.safetensors"
DEFAULT_ONNX = DEFAULT_WEIGHTS.with_suffix(".onnx")
#: Key of the :class:`ModelMeta` JSON in a checkpoint's header and an ONNX file's metadata_props.
META_KEY = "realtime.meta"
#: Key of the sha256 of the checkpoint an ONNX file was exported from.
SOURCE_KEY = "realtime.checkpoint_sha256"
#: Tensor names of every exported model.
INPUT_NAME = "crops"
OUTPUT_NAMES = ("age_probs", "gender_probs", "age_years")
#: Suffixes of built TensorRT engines.
ENGINE_SUFFIXES = (".engine", ".plan")


def cache_dir(*parts: str) -> Path:
    """``$REALTIME_CACHE``, else ``$XDG_CACHE_HOME/realtime``, else ``~/.cache/realtime``.

    The returned directory (joined with ``parts``) is created if missing.
    """
    base = os.environ.get("REALTIME_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "realtime")
    path = Path(base).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint_meta(path: str | Path) -> ModelMeta:
    """Read only the metadata of a ``.safetensors`` checkpoint (no torch needed)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise RealtimeError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        raise RealtimeError(f"{path}: an ONNX export has no trainable weights; pass the .safetensors checkpoint it came from")
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise RealtimeError(f"{path}: not a realtime checkpoint (safetensors expected: {e})") from None
    if META_KEY not in header:
        raise RealtimeError(f"{path}: a safetensors file without realtime model metadata; was it written by `realtime train`?")
    return ModelMeta.from_json(header[META_KEY], str(path))


def onnx_session(path: str | Path, opts=None, providers: list[str] | None = None):
    """An ONNX Runtime session for ``path``; a file it cannot load is one RealtimeError.

    Without ``opts`` the session is only for reading the file (graph optimisations
    off). The runtime install reads ONNX files with ONNX Runtime alone: the ``onnx``
    package (31 MB) comes only with the ``[train]`` extra, which writes them."""
    import onnxruntime as ort

    if opts is None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf types without a public base
        raise RealtimeError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0][:200]})") from None


def onnx_metadata(path: str | Path, session=None) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (or of an open ``session`` of it)."""
    session = session if session is not None else onnx_session(path)
    return dict(session.get_modelmeta().custom_metadata_map)


def read_onnx_meta(path: str | Path, session=None) -> ModelMeta:
    """Read the :class:`ModelMeta` stored in an ONNX file by ``engines.export.export_onnx``,
    and check that the graph's input and outputs have the shapes it promises."""
    session = session if session is not None else onnx_session(path)
    props = onnx_metadata(path, session)
    if META_KEY not in props:
        raise RealtimeError(f"{path}: ONNX file without realtime model metadata; export it with `realtime convert --format onnx`")
    meta = ModelMeta.from_json(props[META_KEY], str(path))
    check_graph_shapes(
        [(i.name, list(i.shape)) for i in session.get_inputs()],
        {o.name: list(o.shape) for o in session.get_outputs()},
        meta,
        path,
    )
    return meta


def check_graph_shapes(inputs: list[tuple[str, list]], outputs: dict[str, list], meta: ModelMeta, path) -> None:
    """A model graph's input and outputs must be what the metadata promises, so a file of
    another shape fails at load with one line, not at the first face.

    ``inputs``: (name, dims) of the graph's inputs; ``outputs``: name -> dims; a dim is
    an int, or a name/None where it is dynamic (the batch)."""
    s, a, g = meta.input_size, len(meta.age_labels), len(meta.gender_labels)
    wanted = {name: shape for name, shape in zip(OUTPUT_NAMES, ([a], [g], []))}
    problems = []
    if len(inputs) != 1 or list(inputs[0][1])[1:] != [3, s, s]:
        got = ", ".join(f"{name} {dims}" for name, dims in inputs) or "none"
        problems.append(f"input should be (N, 3, {s}, {s}), it is {got}")
    for name, shape in wanted.items():
        if name not in outputs:
            problems.append(f"output {name} is missing")
        elif outputs[name][1:] not in (shape, [1] if not shape else shape):  # age_years: (N,) or (N, 1)
            problems.append(f"output {name} should be (N{''.join(f', {d}' for d in shape)}), it is {outputs[name]}")
    if problems:
        raise RealtimeError(f"{path}: its graph does not match its metadata ({'; '.join(problems)})")


def checkpoint_file(path: Path | None) -> Path | None:
    """The checkpoint ``path`` names: itself, or the default weights for None (None
    again when only the untrained fallback exists)."""
    if path is not None:
        return path
    return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None


def cached_path(kind: str, path: Path | None, suffix: str) -> Path | None:
    """Where the ``kind`` conversion (``"onnx"``, ``"openvino"``, ``"tensorrt"``) of a
    checkpoint is cached: ``<cache>/<kind>/<sha256[:32]><suffix>``; None for the
    untrained fallback, which has no file to hash."""
    source = checkpoint_file(path)
    if source is None:
        return None
    return cache_dir(kind) / f"{file_sha256(source)[:32]}{suffix}"
