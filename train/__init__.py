"""Training and evaluation of the age/gender models (``realtime train``, ``realtime eval``).

``cross_validate(TrainSettings(...))`` trains; ``evaluate(EvalSettings(...))`` scores a
model through the app's own preprocessing. Names load lazily, so importing the
package (e.g. for the CLI) does not import torch.
"""

from __future__ import annotations

from engines.lazy import lazy_exports

_EXPORTS = {
    "TrainSettings": "train.trainer",
    "cross_validate": "train.fit",
    "fit": "train.fit",
    "EvalSettings": "train.evaluate",
    "evaluate": "train.evaluate",
    "AugmentSettings": "train.augment",
    "LabelledSet": "train.data",
    "load_dataset": "train.formats",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
