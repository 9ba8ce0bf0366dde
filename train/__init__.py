"""Training and evaluation of the age/gender models (``realtime train``, ``realtime eval``).

``cross_validate(TrainSettings(...))`` trains; ``evaluate(EvalSettings(...))`` scores a
model through the app's own preprocessing. Names load lazily, so importing the
package (e.g. for the CLI) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainSettings": "train.trainer",
    "cross_validate": "train.trainer",
    "fit": "train.trainer",
    "EvalSettings": "train.evaluate",
    "evaluate": "train.evaluate",
    "AugmentSettings": "train.augment",
    "LabelledSet": "train.data",
    "load_dataset": "train.data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
