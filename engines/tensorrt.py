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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.errors import RealtimeError
from engines.files import ENGINE_SUFFIXES, INPUT_NAME, OUTPUT_NAMES, cached_path
from engines.meta import ModelMeta
from engines.registry import Engine, register_backend
from engines.sidecar import PRECISIONS, Target, check_target, read_sidecar

log = logging.getLogger(__name__)

#: The TensorRT major version this module is written against. TensorRT 11 removed the
#: FP16/INT8 builder flags and the INT8 calibrators (and 9 and older lack the tensor
#: API used to run engines), so `pip install 'realtime[tensorrt]'` pins ``>=10,<11``.
TENSORRT_MAJOR = 10


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


def check_tensorrt_version(version: str) -> None:
    """Refuse a TensorRT whose API this module does not use correctly (one line, with the fix)."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise RealtimeError(f"TensorRT version {version!r} is not understood; install tensorrt>=10,<11") from None
    if major != TENSORRT_MAJOR:
        gone = "removed the FP16/INT8 builder flags and INT8 calibrators" if major > TENSORRT_MAJOR else "lacks the tensor API"
        raise RealtimeError(
            f"TensorRT {version} is installed, but realtime builds and runs engines with TensorRT {TENSORRT_MAJOR} "
            f"(TensorRT {major} {gone}): pip install 'tensorrt>={TENSORRT_MAJOR},<{TENSORRT_MAJOR + 1}'"
        )


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise RealtimeError(
            "TensorRT is not installed: pip install 'realtime[tensorrt]' on a machine with an NVIDIA GPU "
            "(or convert with --format onnx / --format openvino for the CPU)"
        ) from None
    check_tensorrt_version(tensorrt.__version__)
    return tensorrt


_LOGGER = None


def _trt_logger(trt):
    """The one TensorRT logger of the process (TensorRT wants a single ILogger, kept
    alive as long as any builder, runtime or engine), routing messages to :mod:`logging`."""
    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt.ILogger):
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

        _LOGGER = _Logger()
    return _LOGGER


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
    if settings.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default: 10-bit mantissas in convolutions, not fp32
    else:
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without int8 kernels run fp16
    if settings.precision == "int8":
        batches = calibration_batches(settings.calib_crops, settings.calib_batch)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(trt, batches)
        # TensorRT calibrates at the calibration profile's opt shape: give it one whose
        # batch is exactly the calibrator's, apart from the run-time profile
        n = len(batches[0])
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(INPUT_NAME, (n, 3, s, s), (n, 3, s, s), (n, 3, s, s))
        config.set_calibration_profile(calib_profile)
    log.info("building a %s TensorRT engine for %s (batch %d/%d/%d)...", settings.precision, target.gpu_name,
             settings.min_batch, settings.opt_batch, settings.max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RealtimeError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT messages above)")
    Path(engine_path).write_bytes(bytes(serialized))
    return target


def calibration_batches(crops: np.ndarray, batch: int) -> list[np.ndarray]:
    """Split calibration crops (N, 3, S, S) into batches of exactly ``min(batch, N)``
    rows, each a contiguous float32 array: the last one is filled up with crops from
    the start, so every crop is seen and TensorRT never reads past a buffer."""
    if crops is None or len(crops) == 0:
        raise RealtimeError("INT8 needs calibration crops: pass --calib DIR (a folder of face crop images)")
    if batch < 1:
        raise RealtimeError(f"calibration batch must be at least 1, got {batch}")
    batch = min(batch, len(crops))
    count = -(-len(crops) // batch) * batch
    order = np.arange(count) % len(crops)
    return [np.ascontiguousarray(crops[order[i : i + batch]], dtype=np.float32) for i in range(0, count, batch)]


def _entropy_calibrator(trt, batches: list[np.ndarray]):
    """An IInt8EntropyCalibrator2 feeding ``batches`` (each (B, 3, S, S), same B) from one CUDA buffer."""
    import torch

    size = len(batches[0])

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.buffer = torch.empty(batches[0].shape, dtype=torch.float32, device="cuda")
            self.index = 0

        def get_batch_size(self):
            return size

        def get_batch(self, names):
            if self.index >= len(batches):
                return None
            self.buffer.copy_(torch.from_numpy(batches[self.index]))
            torch.cuda.synchronize()
            self.index += 1
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self):
            return None  # always calibrate: a stale cache from other weights would be silently wrong

        def write_calibration_cache(self, cache):
            return None

    log.info("INT8 calibration: %d batches of %d crops", len(batches), size)
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
        path = engine_file(path)
        side = read_sidecar(path)
        check_target(side, current_target(), path)
        super().__init__(side.meta)
        try:
            self._load(path)
        except RealtimeError:
            raise
        except Exception as e:  # out of GPU memory, a TensorRT or CUDA error: one line, so `auto` moves on
            first = str(e).splitlines()[0] if str(e) else ""
            raise RealtimeError(f"{path}: TensorRT cannot load this engine here ({type(e).__name__}: {first})") from e
        log.info("TensorRT engine %s: %s, batch %d..%d", path, side.precision, self.min_batch, self.max_batch)

    def _load(self, path: Path) -> None:
        import torch

        trt = _import_tensorrt()
        self._runtime = trt.Runtime(_trt_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise RealtimeError(f"{path}: TensorRT cannot deserialize this engine; rebuild it with `realtime convert`")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RealtimeError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if INPUT_NAME not in names or not set(OUTPUT_NAMES) <= set(names):
            raise RealtimeError(f"{path}: engine tensors {names} are not {INPUT_NAME} -> {', '.join(OUTPUT_NAMES)}")
        lo, _, hi = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        found = {n: self._engine.get_tensor_dtype(n) for n in (INPUT_NAME, *OUTPUT_NAMES)}
        odd = {n: str(d) for n, d in found.items() if d not in dtypes}
        if odd:
            raise RealtimeError(f"{path}: engine tensors of unexpected types {odd}; rebuild it with `realtime convert`")
        s, a, g = self.meta.input_size, len(self.meta.age_labels), len(self.meta.gender_labels)
        shapes = {INPUT_NAME: (3, s, s), "age_probs": (a,), "gender_probs": (g,), "age_years": ()}
        self._buffers = {n: torch.empty((self.max_batch, *shapes[n]), dtype=dtypes[d], device="cuda") for n, d in found.items()}
        for n, buffer in self._buffers.items():
            if not self._context.set_tensor_address(n, buffer.data_ptr()):
                raise RealtimeError(f"{path}: TensorRT refused the buffer of tensor {n}")
        self._stream = torch.cuda.Stream()

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
