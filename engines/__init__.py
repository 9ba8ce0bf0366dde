"""Model, export and inference backends for realtime."""

from engines.backends import Engine, Predictions, create_engine, list_backends, register_backend
from engines.meta import AGE_LABELS, GENDER_LABELS, ModelMeta

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
