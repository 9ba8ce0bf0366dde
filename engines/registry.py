"""The backend registry: the :class:`Engine` interface, and the factories that backend
modules register into (as timm's models do); :func:`create_engine` builds one.

This module imports no backend module: the built-in ones (:data:`BUILTIN_MODULES`)
are loaded by name the first time the registry is asked for a backend, and register
themselves here, so the imports point one way and ``import engines`` stays light.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from engines.errors import RealtimeError, require
from engines.files import read_checkpoint_meta, read_onnx_meta
from engines.meta import ModelMeta

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


#: name -> factory(model_path or None for the default weights) -> Engine
_BACKENDS: dict[str, Callable[[Path | None], Engine]] = {}
#: name -> importable module the backend needs
_REQUIRES: dict[str, str] = {}
#: Order ``auto`` tries, fastest first.
AUTO_ORDER = ("tensorrt", "onnxruntime", "openvino", "torch")
#: The modules of the built-in backends, imported on first use of the registry.
BUILTIN_MODULES = ("engines.backends", "engines.openvino", "engines.tensorrt")
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in BUILTIN_MODULES:
            importlib.import_module(name)


def register_backend(name: str, requires: str):
    """Decorator: register ``factory(model_path) -> Engine`` under ``name``."""

    def wrap(factory):
        _BACKENDS[name] = factory
        _REQUIRES[name] = requires
        return factory

    return wrap


def list_backends(available_only: bool = False) -> list[str]:
    _load_builtins()
    names = [n for n in AUTO_ORDER if n in _BACKENDS] + sorted(set(_BACKENDS) - set(AUTO_ORDER))
    return [n for n in names if not available_only or backend_available(n)]


def backend_available(name: str) -> bool:
    _load_builtins()
    return importlib.util.find_spec(_REQUIRES[name]) is not None


def create_engine(model: str | Path | None = None, backend: str | Sequence[str] = "auto") -> Engine:
    """Load ``model`` (a .safetensors checkpoint, an .onnx file, or None for the default
    weights) on ``backend``: one of :func:`list_backends`, or ``"auto"`` (each installed
    backend in that order), or a sequence of names to try in order.

    Trying several, any failure to load (our RealtimeError, a runtime's own exception,
    running out of GPU memory) is one warning line and the next backend is tried."""
    _load_builtins()
    path = Path(model) if model is not None else None
    if path is not None:
        check_model_file(path)
    if isinstance(backend, str) and backend != "auto":
        if backend not in _BACKENDS:
            raise RealtimeError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(list_backends())}")
        require(_REQUIRES[backend], f"backend {backend!r}")
        engine = _BACKENDS[backend](path)
        log.info("engine: %s (asked for by name)", backend)
        return engine
    names = list_backends() if backend == "auto" else list(backend)
    unknown = [n for n in names if n not in _BACKENDS]
    if unknown:
        raise RealtimeError(f"unknown backend {unknown[0]!r}; choose from: auto, {', '.join(list_backends())}")
    skipped = []
    for name in names:
        if not backend_available(name):
            skipped.append(f"{name} not installed")
            continue
        try:
            engine = _BACKENDS[name](path)
        except Exception as e:  # any load failure (no GPU memory, a runtime's own error): try the next one
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, RealtimeError):
                first = f"{type(e).__name__}: {first}"
                log.debug("backend %s failed to load", name, exc_info=True)
            log.warning("backend %s cannot load this model: %s", name, first)
            skipped.append(f"{name} failed")
            continue
        how = "auto: fastest that loads" if backend == "auto" else "first that loads of " + ", ".join(names)
        log.info("engine: %s (%s%s)", name, how, f"; {', '.join(skipped)}" if skipped else "")
        return engine
    raise RealtimeError(f"no backend could load {path or 'the default model'} ({', '.join(skipped)})")


def check_model_file(path: Path) -> None:
    """Fail with one clear line if ``path`` is not a model file we can read at all, so
    that ``auto`` does not try every backend on a broken file."""
    if not path.is_file():
        raise RealtimeError(f"model file not found: {path}")
    if path.suffix == ".onnx":
        read_onnx_meta(path)
    elif path.suffix in (".safetensors", ""):
        read_checkpoint_meta(path)


