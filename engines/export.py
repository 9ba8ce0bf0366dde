"""Export a checkpoint to ONNX with a dynamic batch axis and its metadata inside."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from engines.meta import ModelMeta
from engines.model import AgeGenderNet, ProbabilityModel
from realtime.errors import RealtimeError

log = logging.getLogger(__name__)

META_KEY = "realtime.meta"
INPUT_NAME = "crops"
OUTPUT_NAMES = ("age_probs", "gender_probs", "age_years")


def export_onnx(net: AgeGenderNet, path: str | Path, opset: int = 17) -> Path:
    """Write ``net`` as ONNX: input ``crops`` (N, 3, S, S) float32, outputs
    ``age_probs`` (N, A), ``gender_probs`` (N, G), ``age_years`` (N,); batch is dynamic.

    The :class:`ModelMeta` is stored in the file's ``metadata_props`` under
    ``realtime.meta``.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = ProbabilityModel(net).eval()
    size = net.meta.input_size
    dummy = torch.zeros(2, 3, size, size)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is what we want
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, net.meta.to_json()
    onnx.save(proto, str(path))
    tmp.unlink()
    log.info("exported ONNX to %s", path)
    return path


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """Read the :class:`ModelMeta` stored in an ONNX file by :func:`export_onnx`."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends without a common base
        raise RealtimeError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise RealtimeError(f"{path}: ONNX file without realtime model metadata; export it with `realtime convert --format onnx`")
    meta = ModelMeta.from_json(props[META_KEY], str(path))
    _check_onnx_shapes(proto.graph, meta, path)
    return meta


def _check_onnx_shapes(graph, meta: ModelMeta, path) -> None:
    """The graph's input and outputs must be what the metadata promises, so a file of
    another shape fails at load with one line, not at the first face."""

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    s, a, g = meta.input_size, len(meta.age_labels), len(meta.gender_labels)
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    outputs = {o.name: o for o in graph.output}
    wanted = {name: shape for name, shape in zip(OUTPUT_NAMES, ([a], [g], []))}
    problems = []
    if len(inputs) != 1 or dims(inputs[0])[1:] != [3, s, s]:
        got = ", ".join(f"{i.name} {dims(i)}" for i in inputs) or "none"
        problems.append(f"input should be (N, 3, {s}, {s}), it is {got}")
    for name, shape in wanted.items():
        if name not in outputs:
            problems.append(f"output {name} is missing")
        elif dims(outputs[name])[1:] not in (shape, [1] if not shape else shape):  # age_years: (N,) or (N, 1)
            problems.append(f"output {name} should be (N{''.join(f', {d}' for d in shape)}), it is {dims(outputs[name])}")
    if problems:
        raise RealtimeError(f"{path}: its graph does not match its metadata ({'; '.join(problems)})")
