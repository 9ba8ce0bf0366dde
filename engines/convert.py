"""``realtime convert``: a checkpoint to a deployable file, optionally checked against torch.

Formats (``--format``, else taken from the output's suffix, else ``tensorrt``):

- ``tensorrt`` (``.engine``/``.plan``): ONNX export with a dynamic batch, built with the
  TensorRT OnnxParser (or torch2trt), one optimization profile, fp32/fp16/int8. The ONNX
  file stays beside the engine (``auto`` falls back to it on another GPU) and a JSON
  sidecar records the ModelMeta, TensorRT version, GPU and checkpoint sha256.
- ``onnx`` (``.onnx``): the export with the ModelMeta in ``metadata_props``.
- ``openvino`` (``.xml`` + ``.bin``): OpenVINO IR with the ModelMeta in ``rt_info``.

Without an output path the result goes to the cache the backends read, keyed by the
checkpoint's sha256, so ``create_engine(ckpt)`` (and ``auto``) pick it up; the untrained
fallback has no file to key on and needs an explicit output.

``check`` runs the result on real face crops next to eager PyTorch and reports the max
abs difference and argmax agreement.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.crops import IMAGE_SUFFIXES, Cropper
from engines.errors import RealtimeError, require
from engines.files import cached_path, checkpoint_file, file_sha256
from engines.images import is_regular, read_image
from engines.limits import check_fields
from engines.resolve import onnx_for
from engines.registry import create_engine
from engines.writes import check_distinct, check_name, is_device

log = logging.getLogger(__name__)

FORMATS = ("tensorrt", "onnx", "openvino")
SUFFIXES = {".engine": "tensorrt", ".plan": "tensorrt", ".onnx": "onnx", ".xml": "openvino"}
#: The backend that runs each format (for ``check``).
FORMAT_BACKEND = {"tensorrt": "tensorrt", "onnx": "onnxruntime", "openvino": "openvino"}
#: Largest max abs probability difference a check accepts, by precision.
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 1e-1, "int8": 1e-1}


@dataclass
class ConvertSettings:
    """What ``realtime convert`` does. Checked on creation, so mistakes fail before work.

    Attributes:
        model: a ``.safetensors`` checkpoint; None for the default model.
        output: where to write; None for the backends' cache (see the module docstring).
        format: ``tensorrt``, ``onnx`` or ``openvino``; None to take it from ``output``.
        fp16: TensorRT fp16 engine; for OpenVINO, fp16 weights run at reduced precision.
        int8: TensorRT INT8 with an entropy calibrator over the crops in ``calib``.
        calib: folder of face crop images (INT8 calibration; also used by ``check``).
        max_batch, opt_batch: the TensorRT optimization profile (min is 1).
        converter: ``onnx`` (TensorRT OnnxParser) or ``torch2trt``.
        check: compare the result with eager PyTorch on face crops.
        check_images: folder of face crop images for ``check`` (default: ``calib``).
        check_count: how many crops ``check`` uses.
        calib_count: how many crops INT8 calibration uses.
    """

    model: Path | None = None
    output: Path | None = None
    format: str | None = None
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None
    max_batch: int = 32
    opt_batch: int = 8
    converter: str = "onnx"
    check: bool = False
    check_images: Path | None = None
    check_count: int = 64
    calib_count: int = 512

    def __post_init__(self):
        self.model = Path(self.model) if self.model is not None else None
        self.output = Path(self.output) if self.output is not None else None
        if self.model is not None and not self.model.is_file():
            raise RealtimeError(f"model file not found: {self.model}; pass a .safetensors checkpoint, or no --model for the default")
        if self.model is not None and self.model.suffix != ".safetensors":
            raise RealtimeError(
                f"{self.model}: convert reads a .safetensors checkpoint (from `realtime train`), "
                f"not {self.model.suffix or 'this file'}"
            )
        if self.output is not None and is_device(self.output):
            raise RealtimeError(f"-o {self.output}: not a regular file; convert writes a model file (and files beside it), give a file name")
        implied = SUFFIXES.get(self.output.suffix) if self.output is not None else None
        if self.output is not None and implied is None:
            raise RealtimeError(f"{self.output}: unknown output type; end it in .engine/.plan (TensorRT), .onnx or .xml (OpenVINO)")
        if self.format is None:
            self.format = implied or "tensorrt"
        if self.format not in FORMATS:
            raise RealtimeError(f"format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if implied is not None and implied != self.format:
            raise RealtimeError(f"{self.output}: that suffix is for {implied}, not --format {self.format}; change -o or --format")
        if self.fp16 and self.int8:
            raise RealtimeError("choose one of --fp16 and --int8 (INT8 engines fall back to fp16 where needed)")
        if self.int8 and self.format != "tensorrt":
            raise RealtimeError(f"--int8 is for TensorRT engines; drop it for --format {self.format}")
        if self.fp16 and self.format == "onnx":
            raise RealtimeError("--fp16 is for TensorRT and OpenVINO; the ONNX export stays fp32")
        if self.int8 and self.calib is None:
            raise RealtimeError("--int8 needs calibration images: pass --calib DIR (a folder of face crops)")
        if self.converter not in ("onnx", "torch2trt"):
            raise RealtimeError(f"converter {self.converter!r}: choose onnx or torch2trt")
        if self.converter == "torch2trt" and self.format != "tensorrt":
            raise RealtimeError("--converter torch2trt builds TensorRT engines; drop it for --format " + self.format)
        check_fields(self, ("max_batch", "opt_batch"))  # the one table of limits
        if not 1 <= self.opt_batch <= self.max_batch:
            raise RealtimeError(f"--opt-batch {self.opt_batch} / --max-batch {self.max_batch}: need 1 <= opt <= max")
        for name in ("calib", "check_images"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise RealtimeError(f"--{name.replace('_', '-')} {folder}: not a folder; pass a folder of face crop images")
        if self.output is not None:
            beside = {"tensorrt": [".onnx", ".json"], "openvino": [".bin"]}.get(self.format, [])
            outputs = [("-o", self.output)] + [("-o", self.output.with_suffix(s)) for s in beside]
            check_name(self.output, "-o")
            check_distinct([p for p in (self.model, self.calib, self.check_images) if p is not None], outputs)
        if self.check and self.check_images is None and self.calib is None:
            raise RealtimeError("--check needs real face crops: pass --check-images DIR (a folder of face crop images)")
        if self.format == "tensorrt" and importlib.util.find_spec("tensorrt") is None:
            raise RealtimeError(
                "TensorRT is not installed: pip install 'realtime[tensorrt]' on a machine with an NVIDIA GPU "
                "(or use --format onnx / --format openvino for the CPU)"
            )
        if self.format == "openvino" and importlib.util.find_spec("openvino") is None:
            raise RealtimeError("OpenVINO is not installed: pip install 'realtime[openvino]'")

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"


@dataclass
class CheckResult:
    """The converted model next to eager PyTorch on the same face crops."""

    backend: str
    crops: int
    max_abs_diff: float  # over age and gender probabilities
    years_max_abs_diff: float
    age_agreement: float  # fraction of crops with the same argmax
    gender_agreement: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        return (
            f"check vs torch on {self.crops} face crops ({self.backend}): max abs diff {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.0e}), years {self.years_max_abs_diff:.2e}, argmax agreement "
            f"age {self.age_agreement:.1%} gender {self.gender_agreement:.1%} -> {'ok' if self.ok else 'FAILED'}"
        )


@dataclass
class ConvertResult:
    format: str
    output: Path
    files: list[Path] = field(default_factory=list)
    check: CheckResult | None = None

    def summary(self) -> str:
        lines = [f"wrote {self.format}: {self.output}"] + [f"  {p}" for p in self.files if p != self.output]
        if self.check is not None:
            lines.append(str(self.check))
        return "\n".join(lines)


def convert(settings: ConvertSettings) -> ConvertResult:
    """Convert ``settings.model`` as ``settings`` asks; see the module docstring."""
    require("torch", "realtime convert")
    from engines.export import export_onnx
    from engines.model import default_model, load_checkpoint

    source = checkpoint_file(settings.model)
    net = load_checkpoint(source) if source is not None else default_model()
    output = settings.output or _cache_output(settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(source) if source is not None else None
    if settings.format == "onnx":
        files = [export_onnx(net, output, source_sha256=sha)]
    elif settings.format == "openvino":
        from engines.openvino import save_ir

        save_ir(onnx_for(settings.model), output, net.meta, reduced_precision=settings.fp16)
        files = [output, output.with_suffix(".bin")]
    else:
        files = _convert_tensorrt(settings, net, source, output)
    result = ConvertResult(settings.format, output, files)
    if settings.check:
        crops = load_face_crops(settings.check_images or settings.calib, net.meta, settings.check_count)
        engine = create_engine(output, backend=FORMAT_BACKEND[settings.format])
        runs_at = getattr(engine, "precision", None)  # OpenVINO decides at load time: f32, f16 or bf16
        precision = {"f32": "fp32", "f16": "fp16"}.get(runs_at, runs_at) if runs_at else settings.precision
        result.check = compare_with_torch(engine, net, crops, CHECK_TOLERANCE.get(precision, CHECK_TOLERANCE["int8"]))
    return result


def _cache_output(settings: ConvertSettings) -> Path:
    suffix = {"tensorrt": ".engine", "onnx": ".onnx", "openvino": ".xml"}[settings.format]
    target = cached_path(settings.format, settings.model, suffix)
    if target is None:
        raise RealtimeError(
            "no trained default weights to convert into the cache; pass --model CKPT, or -o FILE to convert the untrained model"
        )
    return target


def _convert_tensorrt(settings: ConvertSettings, net, source: Path | None, output: Path) -> list[Path]:
    from engines.export import export_onnx
    from engines.sidecar import Sidecar, write_sidecar
    from engines.tensorrt import BuildSettings, build_engine, build_engine_torch2trt

    calib = load_face_crops(settings.calib, net.meta, settings.calib_count) if settings.int8 else None
    build = BuildSettings(settings.precision, 1, settings.opt_batch, settings.max_batch, calib_crops=calib)
    sha = file_sha256(source) if source is not None else None
    onnx_path = export_onnx(net, output.with_suffix(".onnx"), source_sha256=sha)  # kept: the fallback on other machines
    if settings.converter == "torch2trt":
        target = build_engine_torch2trt(net, output, build)
    else:
        target = build_engine(onnx_path, output, net.meta, build)
    side = Sidecar(
        meta=net.meta,
        tensorrt_version=target.tensorrt_version,
        gpu_name=target.gpu_name,
        compute_capability=target.compute_capability,
        precision=settings.precision,
        min_batch=build.min_batch,
        opt_batch=build.opt_batch,
        max_batch=build.max_batch,
        checkpoint=str(source.resolve()) if source is not None else None,
        checkpoint_sha256=sha,
        onnx=onnx_path.name,
        converter=settings.converter,
    )
    return [output, write_sidecar(output, side), onnx_path]


def load_face_crops(folder: str | Path, meta, limit: int | None = None) -> np.ndarray:
    """Images in ``folder`` that each are one face crop -> (N, 3, S, S) float32 model input
    (via ``Cropper(meta).crop_whole``). With ``limit``, N images spread evenly over the
    sorted folder."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and is_regular(p)) if folder.is_dir() else []
    if not files:
        raise RealtimeError(f"{folder}: no face crop images ({', '.join(sorted(IMAGE_SUFFIXES))}); pass a folder of face crops")
    if limit is not None and len(files) > limit:
        files = [files[i * len(files) // limit] for i in range(limit)]
    cropper = Cropper(meta)
    crops = []
    for path in files:
        try:
            image = read_image(path)
        except RealtimeError as e:
            log.warning("skipping %s", e)
            continue
        crops.append(cropper.crop_whole(image))
    if not crops:
        raise RealtimeError(f"{folder}: none of its images could be read; pass a folder of face crop images")
    return np.concatenate(crops)


def compare_with_torch(engine, net, crops: np.ndarray, tolerance: float = 1e-3) -> CheckResult:
    """Run ``engine`` and eager PyTorch (``net`` on the CPU, fp32) on ``crops``."""
    import torch

    from engines.model import ProbabilityModel

    with torch.inference_mode():
        ref = [t.numpy() for t in ProbabilityModel(net).eval().cpu()(torch.from_numpy(crops))]
    out = engine.infer_raw(crops)  # the network against the network; both apply the same temperature
    diff = max(float(np.abs(out.age_probs - ref[0]).max()), float(np.abs(out.gender_probs - ref[1]).max()))
    return CheckResult(
        backend=engine.name,
        crops=len(crops),
        max_abs_diff=diff,
        years_max_abs_diff=float(np.abs(out.age_years - ref[2]).max()),
        age_agreement=float((out.age_probs.argmax(1) == ref[0].argmax(1)).mean()),
        gender_agreement=float((out.gender_probs.argmax(1) == ref[1].argmax(1)).mean()),
        tolerance=tolerance,
    )
