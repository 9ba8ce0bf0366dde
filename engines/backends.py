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

import logging
import os
from pathlib import Path

import numpy as np

from engines.registry import Engine, register_backend
from engines.resolve import load_net, onnx_for

log = logging.getLogger(__name__)


class FlipAveraged(Engine):
    """Test-time augmentation around any engine: each crop and its mirror image go in
    one batch, and their predictions are averaged (2x the classifier work; what it buys
    on the default model: MODEL_CARD.md)."""

    def __init__(self, engine: Engine):
        super().__init__(engine.meta)
        self.engine = engine
        self.name = f"{engine.name}+flip"

    def _infer(self, crops):
        n = len(crops)
        out = self.engine.infer(np.concatenate([crops, crops[..., ::-1]]))
        return tuple((o[:n] + o[n:]) / 2 for o in out)


@register_backend("torch", requires="torch")
class TorchEngine(Engine):
    """Eager PyTorch on the CPU (or CUDA when present): the reference and the fallback."""

    name = "torch"

    def __init__(self, path: Path | None, device: str | None = None):
        import torch

        from engines.model import ProbabilityModel

        net = load_net(path)
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

        from engines.files import OUTPUT_NAMES, onnx_session, read_onnx_meta

        onnx_path = onnx_for(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or usable_cpus()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # batch sizes change from frame to frame: ORT would plan and keep the memory of
        # each size (+18 MB over batches 2-20, no faster)
        opts.enable_mem_pattern = False
        opts.log_severity_level = 3
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = onnx_session(onnx_path, opts, providers)
        super().__init__(read_onnx_meta(onnx_path, self.session))
        self._outputs = list(OUTPUT_NAMES)
        self._input = self.session.get_inputs()[0].name

    def _infer(self, crops):
        return tuple(self.session.run(self._outputs, {self._input: crops}))
