"""TensorRT: build an engine from the ONNX export, and run it behind :class:`Engine`.

A serialized engine only runs on the TensorRT version and the GPU it was built with, so
every ``model.engine`` has a JSON sidecar ``model.json`` beside it::

    {"format_version": 1, "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA L4",
     "compute_capability": "8.9", "precision": "fp16",
     "min_batch": 1, "opt_batch": 8, "max_batch": 32,
     "checkpoint": "/abs/model.safetensors", "checkpoint_sha256": "...",
     "onnx": "model.onnx", "converter": "onnx", "meta": {...ModelMeta...}}

Loading refuses an engine whose sidecar names another TensorRT version or GPU with one
line saying how to rebuild it; ``create_engine(..., "auto")`` then falls back to the
ONNX file written beside the engine. Only :class:`TensorRTEngine`, :func:`build_engine`
and :func:`build_engine_torch2trt` import ``tensorrt``; the sidecar functions are pure.

Buffers are torch CUDA tensors (no pycuda). Batches larger than the engine's
optimization profile are split into chunks, smaller ones padded up to its minimum.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import RealtimeError
from engines.files import ENGINE_SUFFIXES, INPUT_NAME, OUTPUT_NAMES, cached_path
from engines.meta import ModelMeta
from engines.registry import Engine, register_backend
from engines.sidecar import CONVERTERS, PRECISIONS, SIDECAR_VERSION, Sidecar, Target, check_target, read_sidecar, sidecar_path, write_sidecar  # noqa: F401

log = logging.getLogger(__name__)

def plan_chunks(n: int, min_batch: int, max_batch: int) -> list[tuple[int, int, int]]:
    """Split ``n`` crops into runs the profile accepts: ``(start, stop, run_batch)`` with
    ``stop - start <= max_batch`` and ``run_batch = max(stop - start, min_batch)`` (the
    rows past ``stop - start`` are padding)."""
    return [(i, min(i + max_batch, n), max(min(max_batch, n - i), min_batch)) for i in range(0, n, max_batch)]


def current_target() -> Target:
    """TensorRT version and GPU of this machine; RealtimeError where either is missing."""
    import torch

    trt = _import_tensorrt()
    if not torch.cuda.is_available():
        raise RealtimeError("TensorRT needs an NVIDIA GPU and a CUDA build of torch; none is visible here")
    major, minor = torch.cuda.get_device_capability()
    return Target(trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}")


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise RealtimeError(
            "TensorRT is not installed: pip install 'realtime[tensorrt]' on a machine with an NVIDIA GPU "
            "(or convert with --format onnx / --format openvino for the CPU)"
        ) from None
    return tensorrt


def _trt_logger(trt):
    class _Logger(trt.ILogger):
        """Routes TensorRT's messages to :mod:`logging`."""

        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            sev = trt.ILogger.Severity
            level = {
                sev.INTERNAL_ERROR: logging.ERROR,
                sev.ERROR: logging.ERROR,
                sev.WARNING: logging.WARNING,
            }.get(severity, logging.DEBUG)
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


# ----------------------------------------------------------------------------- building


@dataclass
class BuildSettings:
    """How :func:`build_engine` builds: precision and the one optimization profile.

    ``calib_crops`` (N, 3, S, S) float32 are required for ``precision="int8"``.
    """

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gib: float = 1.0
    calib_crops: np.ndarray | None = None
    calib_batch: int = 16

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise RealtimeError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise RealtimeError(
                f"batch profile min {self.min_batch} / opt {self.opt_batch} / max {self.max_batch}: "
                "need 1 <= min <= opt <= max (lower --opt-batch or raise --max-batch)"
            )
        if self.precision == "int8" and (self.calib_crops is None or len(self.calib_crops) == 0):
            raise RealtimeError("INT8 needs calibration crops: pass --calib DIR (a folder of face crop images)")


def build_engine(onnx_path: str | Path, engine_path: str | Path, meta: ModelMeta, settings: BuildSettings) -> Target:
    """Parse ``onnx_path`` with the TensorRT OnnxParser and write a serialized engine with
    one optimization profile (min/opt/max batch) to ``engine_path``. Returns what the
    engine is tied to, for the sidecar."""
    trt = _import_tensorrt()
    target = current_target()
    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RealtimeError(f"{onnx_path}: TensorRT cannot parse this ONNX file ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * (1 << 30)))
    s = meta.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (settings.min_batch, 3, s, s), (settings.opt_batch, 3, s, s), (settings.max_batch, 3, s, s)
    )
    config.add_optimization_profile(profile)
    if settings.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without int8 kernels run fp16
    if settings.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(trt, settings.calib_crops, settings.calib_batch)
        config.set_calibration_profile(profile)
    log.info("building a %s TensorRT engine for %s (batch %d/%d/%d)...", settings.precision, target.gpu_name,
             settings.min_batch, settings.opt_batch, settings.max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RealtimeError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT messages above)")
    Path(engine_path).write_bytes(bytes(serialized))
    return target


def _entropy_calibrator(trt, crops: np.ndarray, batch: int):
    """An IInt8EntropyCalibrator2 feeding ``crops`` in fixed batches from a CUDA tensor."""
    import torch

    batch = min(batch, len(crops))
    chunks = [crops[i : i + batch] for i in range(0, len(crops) - batch + 1, batch)]

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = torch.empty((batch, *crops.shape[1:]), dtype=torch.float32, device="cuda")
            self.index = 0

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.index >= len(chunks):
                return None
            self.buffer.copy_(torch.from_numpy(np.ascontiguousarray(chunks[self.index])))
            torch.cuda.synchronize()
            self.index += 1
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self):
            return None  # always calibrate: a stale cache from other weights would be silently wrong

        def write_calibration_cache(self, cache):
            return None

    log.info("INT8 calibration over %d crops in batches of %d", batch * len(chunks), batch)
    return _Calibrator()


def build_engine_torch2trt(net, engine_path: str | Path, settings: BuildSettings) -> Target:
    """Build with torch2trt (where installed) instead of the ONNX parser. MobileNetV3's
    hardswish/hardsigmoid get converters of our own if torch2trt lacks them."""
    import torch

    try:
        from torch2trt import torch2trt
    except ImportError:
        raise RealtimeError(
            "torch2trt is not installed: install it from github.com/NVIDIA-AI-IOT/torch2trt, or use --converter onnx"
        ) from None
    if settings.precision == "int8":
        raise RealtimeError("--int8 is built with the ONNX converter only; drop --converter torch2trt")
    trt = _import_tensorrt()
    target = current_target()
    _register_torch2trt_converters(trt)
    from engines.model import ProbabilityModel

    s = net.meta.input_size
    model = ProbabilityModel(net).eval().cuda()
    x = torch.zeros((settings.opt_batch, 3, s, s), device="cuda")
    trt_model = torch2trt(
        model,
        [x],
        fp16_mode=settings.precision == "fp16",
        max_batch_size=settings.max_batch,
        min_shapes=[(settings.min_batch, 3, s, s)],
        opt_shapes=[(settings.opt_batch, 3, s, s)],
        max_shapes=[(settings.max_batch, 3, s, s)],
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        max_workspace_size=int(settings.workspace_gib * (1 << 30)),
    )
    Path(engine_path).write_bytes(bytes(trt_model.engine.serialize()))
    return target


def _register_torch2trt_converters(trt) -> None:
    from torch2trt.torch2trt import CONVERTERS as registered
    from torch2trt.torch2trt import add_missing_trt_tensors, tensorrt_converter

    def hard_sigmoid(ctx, x):
        layer = ctx.network.add_activation(x, trt.ActivationType.HARD_SIGMOID)
        layer.alpha, layer.beta = 1.0 / 6.0, 0.5
        return layer.get_output(0)

    if "torch.nn.functional.hardsigmoid" not in registered:

        @tensorrt_converter("torch.nn.functional.hardsigmoid")
        def _hardsigmoid(ctx):
            x = add_missing_trt_tensors(ctx.network, [ctx.method_args[0]])[0]
            ctx.method_return._trt = hard_sigmoid(ctx, x)

    if "torch.nn.functional.hardswish" not in registered:

        @tensorrt_converter("torch.nn.functional.hardswish")
        def _hardswish(ctx):
            x = add_missing_trt_tensors(ctx.network, [ctx.method_args[0]])[0]
            layer = ctx.network.add_elementwise(x, hard_sigmoid(ctx, x), trt.ElementWiseOperation.PROD)
            ctx.method_return._trt = layer.get_output(0)


# ----------------------------------------------------------------------------- running


def engine_file(path: Path | None) -> Path:
    """The engine to load for ``path``: itself if it is one; for a checkpoint (or the
    default weights) the engine ``realtime convert`` cached for it, else RealtimeError so
    that ``auto`` moves on."""
    if path is not None and path.suffix in ENGINE_SUFFIXES:
        return path
    if path is not None and path.suffix != ".safetensors":
        raise RealtimeError(f"{path}: TensorRT runs a built .engine; build one with `realtime convert --model CKPT -o model.engine`")
    cached = cached_path("tensorrt", path, ".engine")
    if cached is None or not cached.is_file():
        name = path or "the default model"
        raise RealtimeError(f"no TensorRT engine built for {name}; build one with `realtime convert --model {path or 'CKPT'}`")
    return cached


@register_backend("tensorrt", requires="tensorrt")
class TensorRTEngine(Engine):
    """A serialized TensorRT engine on the GPU; I/O through torch CUDA tensors."""

    name = "tensorrt"

    def __init__(self, path: Path | None):
        import torch

        path = engine_file(path)
        side = read_sidecar(path)
        check_target(side, current_target(), path)
        super().__init__(side.meta)
        trt = _import_tensorrt()
        self._logger = _trt_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise RealtimeError(f"{path}: TensorRT cannot deserialize this engine; rebuild it with `realtime convert`")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if INPUT_NAME not in names or not set(OUTPUT_NAMES) <= set(names):
            raise RealtimeError(f"{path}: engine tensors {names} are not {INPUT_NAME} -> {', '.join(OUTPUT_NAMES)}")
        lo, _, hi = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        s, a, g = self.meta.input_size, len(self.meta.age_labels), len(self.meta.gender_labels)
        shapes = {INPUT_NAME: (3, s, s), "age_probs": (a,), "gender_probs": (g,), "age_years": ()}
        self._buffers = {
            n: torch.empty((self.max_batch, *shapes[n]), dtype=dtypes[self._engine.get_tensor_dtype(n)], device="cuda")
            for n in (INPUT_NAME, *OUTPUT_NAMES)
        }
        for n, buffer in self._buffers.items():
            self._context.set_tensor_address(n, buffer.data_ptr())
        self._stream = torch.cuda.Stream()
        log.info("TensorRT engine %s: %s, batch %d..%d", path, side.precision, self.min_batch, self.max_batch)

    def _infer(self, crops):
        import torch

        outs: list[list[np.ndarray]] = [[], [], []]
        host = torch.from_numpy(crops)
        s = self.meta.input_size
        with torch.cuda.stream(self._stream):
            for start, stop, run in plan_chunks(len(crops), self.min_batch, self.max_batch):
                n = stop - start
                self._buffers[INPUT_NAME][:n].copy_(host[start:stop])
                self._context.set_input_shape(INPUT_NAME, (run, 3, s, s))
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
                for i, name in enumerate(OUTPUT_NAMES):
                    outs[i].append(self._buffers[name][:n].float().cpu().numpy())
        return tuple(np.concatenate(o) for o in outs)
