"""The one error type for mistakes a user can make (``realtime.errors`` re-exports it)."""

from __future__ import annotations

import importlib.util


class RealtimeError(Exception):
    """A problem the user can fix: a missing file, a bad video, no camera, a wrong model.

    The message is one line that names the input and, where there is one, the fix.
    The CLI prints it on stderr and exits non-zero; anything else is a bug and keeps
    its traceback.
    """


#: Which ``pip install 'realtime[EXTRA]'`` brings each optional module.
EXTRAS = {"torch": "train", "timm": "train", "torchvision": "train", "openvino": "openvino", "tensorrt": "tensorrt"}


def require(module: str, what: str, hint: str = "") -> None:
    """Fail with one line naming the extra to install when ``module`` is missing
    (``what`` says what needs it, e.g. "realtime train"; ``hint`` an alternative)."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(module)
        fix = f"pip install 'realtime[{extra}]'" if extra else f"pip install {module}"
        raise RealtimeError(f"{what} needs {module}, which is not installed: {fix}{f' {hint}' if hint else ''}")
