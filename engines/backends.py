"""Inference engines: a batch of face crops in, age and gender probabilities out.

Backends register by name, like timm's models; :func:`create_engine` builds one::

    engine = create_engine("model.safetensors", backend="auto")
    out = engine.infer(crops)          # crops: (N, 3, S, S) float32
    out.age_probs, out.gender_probs    # (N, 8), (N, 2)

``"auto"`` tries the backends in :data:`AUTO_ORDER` and takes the first that loads,
logging which one runs and why.

What each backend accepts (``None`` means the default weights):

============  ===========================================================
tensorrt      a built ``.engine``/``.plan`` (JSON sidecar beside it), or a
              checkpoint whose engine ``realtime convert`` cached for this GPU
openvino      ``.xml`` IR from ``realtime convert --format openvino``,
              ``.onnx``, ``.safetensors``
onnxruntime   ``.onnx``, ``.safetensors``
torch         ``.safetensors``
============  ===========================================================

A TensorRT engine given to another backend runs from the ONNX file written beside
it (or the unchanged checkpoint it was built from), so ``auto`` falls back from an
engine built for another GPU or TensorRT version.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from engines.meta import ModelMeta
from realtime.errors import RealtimeError

log = logging.getLogger(__name__)


class Predictions(NamedTuple):
    """Engine output for N crops.

    Attributes:
        age_probs: (N, A) float32, rows sum to 1, A = len(meta.age_labels).
        gender_probs: (N, G) float32, rows sum to 1.
        age_years: (N,) float32, the regression head's age estimate in years.
    """

    age_probs: np.ndarray
    gender_probs: np.ndarray
    age_years: np.ndarray


class Engine(ABC):
    """One loaded model on one runtime. ``infer`` is the only verb."""

    name: str = ""

    def __init__(self, meta: ModelMeta):
        self.meta = meta

    def infer(self, crops: np.ndarray) -> Predictions:
        """Classify a batch of crops: (N, 3, S, S) float32, N may be 0."""
        s = self.meta.input_size
        if crops.ndim != 4 or crops.shape[1:] != (3, s, s):
            raise ValueError(f"crops must have shape (N, 3, {s}, {s}), got {crops.shape}")
        if len(crops) == 0:
            a, g = len(self.meta.age_labels), len(self.meta.gender_labels)
            return Predictions(np.zeros((0, a), np.float32), np.zeros((0, g), np.float32), np.zeros(0, np.float32))
        age, gender, years = self._infer(np.ascontiguousarray(crops, dtype=np.float32))
        return Predictions(age.astype(np.float32), gender.astype(np.float32), years.reshape(-1).astype(np.float32))

    @abstractmethod
    def _infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(arch={self.meta.arch!r}, input_size={self.meta.input_size})"


class FlipAveraged(Engine):
    """Test-time augmentation around any engine: each crop and its mirror image go in
    one batch, and their predictions are averaged (2x the classifier work; measured on
    the default model: age exact +1.5 points, MAE 5.05 -> 4.90 years)."""

    def __init__(self, engine: Engine):
        super().__init__(engine.meta)
        self.engine = engine
        self.name = f"{engine.name}+flip"

    def _infer(self, crops):
        n = len(crops)
        out = self.engine.infer(np.concatenate([crops, crops[..., ::-1]]))
        return tuple((o[:n] + o[n:]) / 2 for o in out)


#: name -> factory(model_path or None for the default weights) -> Engine
_BACKENDS: dict[str, Callable[[Path | None], Engine]] = {}
#: name -> importable module the backend needs
_REQUIRES: dict[str, str] = {}
#: Order ``auto`` tries, fastest first.
AUTO_ORDER = ("tensorrt", "onnxruntime", "openvino", "torch")


def register_backend(name: str, requires: str):
    """Decorator: register ``factory(model_path) -> Engine`` under ``name``."""

    def wrap(factory):
        _BACKENDS[name] = factory
        _REQUIRES[name] = requires
        return factory

    return wrap


def list_backends(available_only: bool = False) -> list[str]:
    names = [n for n in AUTO_ORDER if n in _BACKENDS] + sorted(set(_BACKENDS) - set(AUTO_ORDER))
    return [n for n in names if not available_only or backend_available(n)]


def backend_available(name: str) -> bool:
    return importlib.util.find_spec(_REQUIRES[name]) is not None


def create_engine(model: str | Path | None = None, backend: str = "auto") -> Engine:
    """Load ``model`` (a .safetensors checkpoint, an .onnx file, or None for the default
    weights) on ``backend`` ("auto" or one of :func:`list_backends`)."""
    path = Path(model) if model is not None else None
    if path is not None:
        check_model_file(path)
    if backend != "auto":
        if backend not in _BACKENDS:
            raise RealtimeError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(list_backends())}")
        if not backend_available(backend):
            raise RealtimeError(f"backend {backend!r} is not installed (missing Python module {_REQUIRES[backend]!r})")
        engine = _BACKENDS[backend](path)
        log.info("engine: %s (asked for by name)", backend)
        return engine
    skipped = []
    for name in list_backends():
        if not backend_available(name):
            skipped.append(f"{name} not installed")
            continue
        try:
            engine = _BACKENDS[name](path)
        except RealtimeError as e:
            log.warning("backend %s cannot load this model: %s", name, e)
            skipped.append(f"{name} failed")
            continue
        log.info("engine: %s (auto: fastest that loads%s)", name, f"; {', '.join(skipped)}" if skipped else "")
        return engine
    raise RealtimeError(f"no backend could load {path or 'the default model'} ({', '.join(skipped)})")


def check_model_file(path: Path) -> None:
    """Fail with one clear line if ``path`` is not a model file we can read at all, so
    that ``auto`` does not try every backend on a broken file."""
    if not path.is_file():
        raise RealtimeError(f"model file not found: {path}")
    if path.suffix == ".onnx":
        from engines.export import read_onnx_meta

        read_onnx_meta(path)
    elif path.suffix in (".safetensors", ""):
        from engines.model import read_meta

        read_meta(path)


#: Suffixes of built TensorRT engines.
ENGINE_SUFFIXES = (".engine", ".plan")


def _load_net(path: Path | None):
    from engines.model import default_model, load_checkpoint

    if path is None:
        return default_model()
    if path.suffix in ENGINE_SUFFIXES:
        path = engine_source(path, "checkpoint")
    elif path.suffix in (".onnx", ".xml"):
        raise RealtimeError(f"{path}: this backend needs a .safetensors checkpoint, not {path.suffix[1:].upper()}")
    return load_checkpoint(path)


def checkpoint_file(path: Path | None) -> Path | None:
    """The checkpoint ``path`` names: itself, or the default weights for None (None
    again when only the untrained fallback exists)."""
    from engines.model import DEFAULT_WEIGHTS

    if path is not None:
        return path
    return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None


def cached_path(kind: str, path: Path | None, suffix: str) -> Path | None:
    """Where the ``kind`` conversion (``"onnx"``, ``"openvino"``, ``"tensorrt"``) of a
    checkpoint is cached: ``<cache>/<kind>/<sha256[:32]><suffix>``; None for the
    untrained fallback, which has no file to hash."""
    from engines.model import file_sha256
    from realtime.paths import cache_dir

    source = checkpoint_file(path)
    if source is None:
        return None
    return cache_dir(kind) / f"{file_sha256(source)[:32]}{suffix}"


def engine_source(path: Path, want: str) -> Path:
    """What another backend runs instead of the TensorRT engine ``path``: the ONNX file
    written beside it (``want="onnx"``, falling back to the checkpoint) or the
    checkpoint it was built from, if unchanged (``want="checkpoint"``)."""
    from engines.model import file_sha256
    from engines.tensorrt import read_sidecar

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


def onnx_for(path: Path | None) -> Path:
    """An ONNX file for ``path``: itself if it is ONNX, the ONNX beside a TensorRT
    engine, else an export cached by the checkpoint's sha256 (the untrained fallback
    exports to a temporary file)."""
    from engines.export import export_onnx

    if path is not None and path.suffix in ENGINE_SUFFIXES:
        path = engine_source(path, "onnx")
    if path is not None and path.suffix == ".onnx":
        return path
    if path is not None and path.suffix == ".xml":
        raise RealtimeError(f"{path}: an OpenVINO IR runs only on the openvino backend; pass the .onnx or .safetensors file")
    target = cached_path("onnx", path, ".onnx")
    if target is None:
        return export_onnx(_load_net(None), Path(tempfile.mkdtemp(prefix="realtime-")) / "untrained.onnx")
    if not target.exists():
        export_onnx(_load_net(path), target)
    return target


@register_backend("torch", requires="torch")
class TorchEngine(Engine):
    """Eager PyTorch on the CPU (or CUDA when present): the reference and the fallback."""

    name = "torch"

    def __init__(self, path: Path | None, device: str | None = None):
        import torch

        from engines.model import ProbabilityModel

        net = _load_net(path)
        super().__init__(net.meta)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = ProbabilityModel(net).eval().to(self.device)

    def _infer(self, crops):
        import torch

        with torch.inference_mode():
            outs = self.model(torch.from_numpy(crops).to(self.device))
        return tuple(o.float().cpu().numpy() for o in outs)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@register_backend("onnxruntime", requires="onnxruntime")
class OnnxRuntimeEngine(Engine):
    """ONNX Runtime, CPU execution provider (CUDA provider when its build has one).

    Tuned on a 2-core CPU (mobilenetv3_small_100 at 112 px, ``engines.bench``):
    ``ORT_ENABLE_ALL`` runs 4-5x faster than ``ORT_ENABLE_EXTENDED`` (its NCHWc layout
    transform); with intra-op spinning off, 2 threads lose less to other busy threads
    (the detector, a second process) and match spinning when the CPU is idle. An
    ORT-optimized model cache would save ~70 ms at load and is tied to the CPU, so none
    is kept. ``threads`` defaults to the CPUs this process may use.
    """

    name = "onnxruntime"

    def __init__(self, path: Path | None, threads: int | None = None):
        import onnxruntime as ort

        from engines.export import OUTPUT_NAMES, read_onnx_meta

        onnx_path = onnx_for(path)
        super().__init__(read_onnx_meta(onnx_path))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or usable_cpus()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types without a public base
            raise RealtimeError(f"{onnx_path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self._outputs = list(OUTPUT_NAMES)
        self._input = self.session.get_inputs()[0].name

    def _infer(self, crops):
        return tuple(self.session.run(self._outputs, {self._input: crops}))


# Backends in their own modules register on import; each imports its runtime lazily.
from engines import openvino as _openvino  # noqa: E402,F401
from engines import tensorrt as _tensorrt  # noqa: E402,F401
