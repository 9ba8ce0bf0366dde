"""Model, export and inference backends for realtime.

The built-in backends register into :mod:`engines.registry` when imported here (as
timm's model modules do); this package never imports ``realtime``.
"""

from engines import backends as _backends  # noqa: F401  (torch, onnxruntime)
from engines import openvino as _openvino  # noqa: F401
from engines import tensorrt as _tensorrt  # noqa: F401
from engines.meta import AGE_LABELS, GENDER_LABELS, ModelMeta
from engines.registry import Engine, Predictions, create_engine, list_backends, register_backend

__all__ = [
    "AGE_LABELS",
    "GENDER_LABELS",
    "Engine",
    "ModelMeta",
    "Predictions",
    "create_engine",
    "list_backends",
    "register_backend",
]
