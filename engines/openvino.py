"""OpenVINO on the CPU: the fastest CPU backend here (optional extra ``realtime[openvino]``).

It reads an IR (``model.xml`` + ``model.bin``) written by ``realtime convert --format
openvino``, which keeps the :class:`ModelMeta` in the IR's ``rt_info``, or the ONNX
export directly. For a checkpoint it takes the IR ``realtime convert`` cached for it
(no ``-o``), else the ONNX export ONNX Runtime uses.

Precision: like OpenVINO itself, checkpoints and ONNX files run at the CPU's reduced
precision where it is native (bf16 on AVX512-BF16/AMX CPUs; f32 elsewhere), ~1.5x
faster than f32 here, probabilities within ~3e-2 of torch (argmax agreement 99.8% on
512 UTKFace crops). An IR carries its own: ``realtime convert --format openvino``
writes an f32 IR (exact), ``--fp16`` one with fp16 weights that runs reduced.
``OpenVinoEngine(path, precision="f32")`` overrides both.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engines.errors import RealtimeError
from engines.files import INPUT_NAME, OUTPUT_NAMES, cached_path, check_graph_shapes, read_onnx_meta
from engines.resolve import onnx_for
from engines.meta import ModelMeta
from engines.registry import Engine, register_backend

log = logging.getLogger(__name__)

META_KEY = "realtime_meta"
PRECISION_KEY = "realtime_precision"


def save_ir(onnx_path: str | Path, xml_path: str | Path, meta: ModelMeta, reduced_precision: bool = False) -> Path:
    """Convert the ONNX export to OpenVINO IR at ``xml_path`` (``.bin`` beside it), with
    ``meta`` in its rt_info. ``reduced_precision`` stores fp16 weights and marks the IR to
    run at the CPU's reduced precision."""
    import openvino as ov

    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise RealtimeError(f"{xml_path}: an OpenVINO IR is written as .xml (with .bin beside it); use -o model.xml")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    model.set_rt_info(meta.to_json(), META_KEY)
    model.set_rt_info("reduced" if reduced_precision else "f32", PRECISION_KEY)
    ov.save_model(model, str(xml_path), compress_to_fp16=reduced_precision)
    log.info("wrote OpenVINO IR %s (%s)", xml_path, "reduced precision" if reduced_precision else "f32")
    return xml_path


def _rt_info(model, key: str) -> str | None:
    return model.get_rt_info(key).astype(str) if model.has_rt_info(key) else None


def read_ir_meta(model, source: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` in an IR's rt_info (``model`` is an ``openvino.Model``),
    checked against the IR's input and output shapes."""
    text = _rt_info(model, META_KEY)
    if text is None:
        raise RealtimeError(
            f"{source}: OpenVINO IR without realtime model metadata; convert it with `realtime convert --format openvino`"
        )
    meta = ModelMeta.from_json(text, str(source))

    def dims(port) -> list:
        return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

    inputs = [(p.get_any_name() if p.get_names() else "?", dims(p)) for p in model.inputs]
    outputs = {name: dims(p) for p in model.outputs for name in p.get_names()}
    check_graph_shapes(inputs, outputs, meta, source)
    return meta


def reduced_precision(core) -> str:
    """The CPU's native reduced inference precision: bf16, else f16, else f32."""
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in caps else "f16" if "FP16" in caps else "f32"


@register_backend("openvino", requires="openvino")
class OpenVinoEngine(Engine):
    """OpenVINO CPU plugin, latency hint (one stream, all ``threads`` on each request).

    ``precision``: ``"f32"``, ``"reduced"`` (the CPU's bf16/f16 where native) or None
    (the IR's own; f32 for ONNX and checkpoints, so predictions never silently change).
    The one chosen is ``.precision``.
    """

    name = "openvino"

    def __init__(self, path: Path | None, threads: int | None = None, precision: str | None = None):
        import openvino as ov

        if precision not in (None, "f32", "reduced"):
            raise ValueError(f"precision must be None, 'f32' or 'reduced', got {precision!r}")
        core = ov.Core()
        if path is None or path.suffix == ".safetensors":  # an IR `realtime convert` cached for it?
            cached = cached_path("openvino", path, ".xml")
            path = cached if cached is not None and cached.is_file() else path
        if path is not None and path.suffix == ".xml":
            try:
                model = core.read_model(str(path))
            except RuntimeError as e:
                raise RealtimeError(f"{path}: OpenVINO cannot read this IR ({str(e).splitlines()[0]})") from None
            meta = read_ir_meta(model, path)
            precision = precision or _rt_info(model, PRECISION_KEY) or "f32"
        else:
            onnx_path = onnx_for(path)
            meta = read_onnx_meta(onnx_path)
            try:
                model = core.read_model(str(onnx_path))
            except RuntimeError as e:
                raise RealtimeError(f"{onnx_path}: OpenVINO cannot read this ONNX file ({str(e).splitlines()[0]})") from None
            precision = precision or "f32"
        precision = reduced_precision(core) if precision == "reduced" else "f32"
        super().__init__(meta)
        # Not pinned: pinned threads stall when the detector or another process holds a core.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.precision = precision
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._outputs = [self._compiled.output(n) for n in OUTPUT_NAMES]
        self._input = self._compiled.input(INPUT_NAME)
        log.info("OpenVINO runs %s at %s precision", path or "the default model", precision)

    def _infer(self, crops):
        result = self._request.infer({self._input: crops})
        return tuple(result[o] for o in self._outputs)
