"""Export a checkpoint to ONNX with a dynamic batch axis and its metadata inside."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from engines.files import INPUT_NAME, META_KEY, OUTPUT_NAMES, SOURCE_KEY
from engines.model import AgeGenderNet, ProbabilityModel

log = logging.getLogger(__name__)


def export_onnx(net: AgeGenderNet, path: str | Path, opset: int = 17, source_sha256: str | None = None) -> Path:
    """Write ``net`` as ONNX: input ``crops`` (N, 3, S, S) float32, outputs
    ``age_probs`` (N, A), ``gender_probs`` (N, G), ``age_years`` (N,); batch is dynamic.

    The :class:`ModelMeta` is stored in the file's ``metadata_props`` under
    ``realtime.meta``, and ``source_sha256`` (the checkpoint's, where there is one)
    under ``realtime.checkpoint_sha256``.
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
    props = {META_KEY: net.meta.to_json(), **({SOURCE_KEY: source_sha256} if source_sha256 else {})}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    tmp.unlink()
    log.info("exported ONNX to %s", path)
    return path
